//! The AMQP edge: everything that talks to RabbitMQ (Pulse in production).
//!
//! * [`connect`] — opening a connection (amqp/amqps, heartbeat, automatic recovery);
//! * [`topology`] — declaring what a consumer needs: its durable queue, bindings, the
//!   dead-letter exchange and queue, the results exchange;
//! * [`tap`] — consuming a queue (the runner's, the dashboard's, `record`'s, the bench's),
//!   with the one reconnect policy; [`depth`] — how many messages wait in a queue;
//! * [`source`] — turning deliveries into [`Message`](crate::message::Message)s;
//! * [`publish`] — publishing with publisher confirms, retried, on a self-healing channel;
//! * [`short`] — AMQP's 255-byte names, checked (never lapin's panicking conversion).

pub mod connect;
pub mod depth;
pub mod publish;
pub mod short;
pub mod source;
pub mod tap;
pub mod topology;
