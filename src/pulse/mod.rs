//! The AMQP edge: everything that talks to RabbitMQ (Pulse in production).
//!
//! * [`connect`] — opening a connection (amqp/amqps, heartbeat, automatic recovery);
//! * [`topology`] — declaring what a consumer needs: its durable queue, bindings, the
//!   dead-letter exchange and queue, the results exchange;
//! * [`source`] — turning deliveries into [`Message`](crate::message::Message)s;
//! * [`publish`] — publishing with publisher confirms, retried, on a self-healing channel.

pub mod connect;
pub mod publish;
pub mod source;
pub mod topology;
