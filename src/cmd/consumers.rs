//! `bugflow consumers`: the consumers as configured, after `{user}` and `{env}` are resolved.

use crate::config::Config;
use crate::consumer;

pub fn print(config: &Config) -> anyhow::Result<()> {
    for spec in consumer::load_all(config)? {
        println!("{} — {}", spec.name, spec.description);
        println!("  queue    {} (prefetch {})", spec.queue, spec.prefetch);
        for b in &spec.bindings {
            println!(
                "  binds    {} {:?}{}",
                b.exchange,
                b.keys,
                if b.optional { " (optional)" } else { "" }
            );
        }
    }
    Ok(())
}
