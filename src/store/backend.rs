//! The two backends behind one small SQL layer: SQLite (a file, the default) and
//! PostgreSQL (a `postgres://` URL, when several processes share the store).
//!
//! Statements are written once, in SQLite's syntax with `?1` placeholders, and translated
//! for PostgreSQL. SQLite's calls block, so they run on tokio's blocking threads, never on
//! the async workers that carry messages.
//!
//! PostgreSQL is reached through a pool (deadpool-postgres): a connection the server ended
//! (a restart, a failover, `pg_terminate_backend`) fails the statement it was running — a
//! transient error, so the message is retried — and is replaced on the next checkout. TLS
//! goes through rustls with the system's roots, as the URL's `sslmode` says (`disable`,
//! `prefer` — the default — or `require`). Every statement has a time limit
//! (`statement_timeout`), and a checkout waits at most [`POOL_WAIT`].

use std::sync::{Arc, Mutex};

use crate::secret::redact_url;

/// A statement parameter.
#[derive(Debug, Clone)]
pub(super) enum Param {
    Int(i64),
    Text(String),
    OptText(Option<String>),
}

/// A result cell.
#[derive(Debug, Clone)]
pub(super) enum Cell {
    Int(i64),
    Text(Option<String>),
}

impl Cell {
    pub(super) fn text(&self) -> String {
        match self {
            Cell::Text(t) => t.clone().unwrap_or_default(),
            Cell::Int(i) => i.to_string(),
        }
    }

    pub(super) fn opt_text(&self) -> Option<String> {
        match self {
            Cell::Text(t) => t.clone(),
            Cell::Int(i) => Some(i.to_string()),
        }
    }

    pub(super) fn int(&self) -> i64 {
        match self {
            Cell::Int(i) => *i,
            Cell::Text(t) => t.as_deref().and_then(|t| t.parse().ok()).unwrap_or(0),
        }
    }
}

/// Where the tables are.
pub(super) enum Backend {
    Sqlite(Arc<Mutex<rusqlite::Connection>>),
    Postgres(deadpool_postgres::Pool),
}

/// Connections kept to PostgreSQL (each consumer's effects and the API share them).
const POOL_SIZE: usize = 8;
/// How long a statement may wait for a connection, or take to connect.
pub const POOL_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
/// The longest a statement may run on the server.
const STATEMENT_TIMEOUT_MS: u64 = 10_000;

/// A pool of connections to the PostgreSQL at `location` (nothing is connected yet).
fn postgres_pool(location: &str) -> anyhow::Result<deadpool_postgres::Pool> {
    use std::str::FromStr;
    let mut config = tokio_postgres::Config::from_str(location)
        .map_err(|e| anyhow::anyhow!("store {}: {e}", redact_url(location)))?;
    if config.get_application_name().is_none() {
        config.application_name("bugflow");
    }
    let options = config.get_options().unwrap_or_default().to_owned();
    config.options(format!("{options} -c statement_timeout={STATEMENT_TIMEOUT_MS}").trim());
    config.connect_timeout(POOL_WAIT);
    crate::init_tls();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let manager = deadpool_postgres::Manager::from_config(
        config,
        tls,
        deadpool_postgres::ManagerConfig {
            recycling_method: deadpool_postgres::RecyclingMethod::Fast,
        },
    );
    deadpool_postgres::Pool::builder(manager)
        .max_size(POOL_SIZE)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(POOL_WAIT))
        .create_timeout(Some(POOL_WAIT))
        .recycle_timeout(Some(POOL_WAIT))
        .build()
        .map_err(|e| anyhow::anyhow!("store {}: {e}", redact_url(location)))
}

/// A pooled connection, or why none could be had (the URL stays out of it).
async fn checkout(pool: &deadpool_postgres::Pool) -> anyhow::Result<deadpool_postgres::Object> {
    pool.get().await.map_err(|e| {
        let text = e.to_string();
        let hint = if text.contains("TLS") {
            " (the server's certificate is not one the system's roots vouch for: install its \
             CA, or add sslmode=disable for a server on this machine)"
        } else {
            ""
        };
        anyhow::anyhow!("PostgreSQL: no connection: {text}{hint}")
    })
}

impl Backend {
    /// Opens the backend `location` names: a `postgres://` URL, or a file path.
    pub(super) async fn open(location: &str) -> anyhow::Result<Backend> {
        if location.starts_with("postgres://") || location.starts_with("postgresql://") {
            let pool = postgres_pool(location)?;
            // Connect once now, so that a wrong URL or password fails the start.
            let first = checkout(&pool)
                .await
                .map_err(|e| anyhow::anyhow!("store {}: {e}", redact_url(location)))?;
            drop(first);
            return Ok(Backend::Postgres(pool));
        }
        let path = std::path::PathBuf::from(location);
        let db = tokio::task::spawn_blocking(move || -> anyhow::Result<rusqlite::Connection> {
            if let Some(parent) = path.parent()
                && !parent.as_os_str().is_empty()
            {
                std::fs::create_dir_all(parent)?;
            }
            let db = rusqlite::Connection::open(&path)
                .map_err(|e| anyhow::anyhow!("store {}: {e}", path.display()))?;
            db.execute_batch("PRAGMA journal_mode = WAL;")?;
            Ok(db)
        })
        .await??;
        Ok(Backend::Sqlite(Arc::new(Mutex::new(db))))
    }

    /// Creates the tables (`schema`) and adds the columns added since (`added`: one that is
    /// there already is passed over), on one connection.
    ///
    /// On PostgreSQL that connection first takes an advisory lock of bugflow's own
    /// ([`SCHEMA_LOCK`]), so that processes opening a new database at once (two replicas, a
    /// consumer and the API) take turns: each running `CREATE … IF NOT EXISTS` on its own,
    /// they raced in PostgreSQL's catalogue and all but one could fail ("duplicate key value
    /// violates unique constraint pg_class_relname_nsp_index") and not start. The lock is
    /// the session's: given back at the end, or by the server if the connection drops.
    pub(super) async fn create_tables(
        &self,
        schema: &[&'static str],
        added: &[&'static str],
    ) -> anyhow::Result<()> {
        let Backend::Postgres(pool) = self else {
            // SQLite takes a lock on the file for each statement already.
            return run_schema(schema, added, |sql| self.execute(sql, &[])).await;
        };
        let client = checkout(pool).await?;
        client
            .execute("SELECT pg_advisory_lock($1)", &[&SCHEMA_LOCK])
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "PostgreSQL: waiting for another bugflow process to create the tables: {e:#} \
                     (retry; if it persists, look for a session holding advisory lock {SCHEMA_LOCK} \
                     in pg_locks)"
                )
            })?;
        let created = run_schema(schema, added, |sql| async {
            Ok(client.execute(sql, &[]).await?)
        })
        .await;
        let unlocked = client
            .execute("SELECT pg_advisory_unlock($1)", &[&SCHEMA_LOCK])
            .await;
        created?;
        unlocked?;
        Ok(())
    }

    /// Runs a statement; returns the rows it changed.
    pub(super) async fn execute(&self, sql: &str, params: &[Param]) -> anyhow::Result<u64> {
        match self {
            Backend::Sqlite(db) => {
                let (db, sql, params) = (db.clone(), sql.to_owned(), params.to_vec());
                tokio::task::spawn_blocking(move || {
                    let db = db.lock().unwrap_or_else(|p| p.into_inner());
                    let values = params.iter().map(sqlite_value);
                    Ok(db.execute(&sql, rusqlite::params_from_iter(values))? as u64)
                })
                .await?
            }
            Backend::Postgres(pool) => {
                let client = checkout(pool).await?;
                let values = pg_values(params);
                let refs = pg_refs(&values);
                Ok(client.execute(&dollar(sql), &refs).await?)
            }
        }
    }

    /// Runs a query; returns its rows.
    pub(super) async fn query(
        &self,
        sql: &str,
        params: &[Param],
    ) -> anyhow::Result<Vec<Vec<Cell>>> {
        match self {
            Backend::Sqlite(db) => {
                let (db, sql, params) = (db.clone(), sql.to_owned(), params.to_vec());
                tokio::task::spawn_blocking(move || {
                    let db = db.lock().unwrap_or_else(|p| p.into_inner());
                    sqlite_query(&db, &sql, &params)
                })
                .await?
            }
            Backend::Postgres(pool) => {
                let client = checkout(pool).await?;
                let values = pg_values(params);
                let refs = pg_refs(&values);
                let rows = client.query(&dollar(sql), &refs).await?;
                Ok(rows.iter().map(pg_row).collect())
            }
        }
    }
}

/// The key of the PostgreSQL advisory lock held while the tables are created: "bugflow" in
/// ASCII, then 1 (a number no other program sharing the database is likely to take).
const SCHEMA_LOCK: i64 = 0x6275_6766_6c6f_7701;

/// `schema`, then `added` (an error that says the column is there already is passed over),
/// each through `execute`.
async fn run_schema<F, Fut>(
    schema: &[&'static str],
    added: &[&'static str],
    execute: F,
) -> anyhow::Result<()>
where
    F: Fn(&'static str) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<u64>>,
{
    for statement in schema {
        execute(statement).await?;
    }
    for statement in added {
        match execute(statement).await {
            Err(e) if !already_there(&e) => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// Whether an `ADD COLUMN` failed because the column is there (SQLite: "duplicate column";
/// PostgreSQL: "already exists").
fn already_there(e: &anyhow::Error) -> bool {
    let text = format!("{e:#}");
    text.contains("duplicate column") || text.contains("already exists")
}

fn sqlite_query(
    db: &rusqlite::Connection,
    sql: &str,
    params: &[Param],
) -> anyhow::Result<Vec<Vec<Cell>>> {
    let mut stmt = db.prepare(sql)?;
    let n = stmt.column_count();
    let rows = stmt.query_map(
        rusqlite::params_from_iter(params.iter().map(sqlite_value)),
        |row| (0..n).map(|i| row.get_ref(i).map(sqlite_cell)).collect(),
    )?;
    Ok(rows.collect::<Result<_, rusqlite::Error>>()?)
}

fn sqlite_cell(value: rusqlite::types::ValueRef<'_>) -> Cell {
    match value {
        rusqlite::types::ValueRef::Integer(v) => Cell::Int(v),
        rusqlite::types::ValueRef::Null => Cell::Text(None),
        other => Cell::Text(Some(
            String::from_utf8_lossy(other.as_bytes().unwrap_or_default()).into_owned(),
        )),
    }
}

/// A PostgreSQL row as cells: integers of any width as `Int`, everything else read as text
/// (a type this layer does not know reads as NULL rather than failing).
fn pg_row(row: &tokio_postgres::Row) -> Vec<Cell> {
    use tokio_postgres::types::Type;
    (0..row.len())
        .map(|i| match *row.columns()[i].type_() {
            Type::INT8 => Cell::Int(row.try_get::<_, i64>(i).unwrap_or_default()),
            Type::INT4 => Cell::Int(row.try_get::<_, i32>(i).map(i64::from).unwrap_or_default()),
            Type::INT2 => Cell::Int(row.try_get::<_, i16>(i).map(i64::from).unwrap_or_default()),
            _ => Cell::Text(row.try_get::<_, Option<String>>(i).ok().flatten()),
        })
        .collect()
}

/// SQLite's `?1` placeholders as PostgreSQL's `$1`.
fn dollar(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

pub(super) fn text(s: &str) -> Param {
    Param::Text(s.to_owned())
}

fn sqlite_value(p: &Param) -> rusqlite::types::Value {
    match p {
        Param::Int(i) => rusqlite::types::Value::Integer(*i),
        Param::Text(t) => rusqlite::types::Value::Text(t.clone()),
        Param::OptText(Some(t)) => rusqlite::types::Value::Text(t.clone()),
        Param::OptText(None) => rusqlite::types::Value::Null,
    }
}

/// The boxed values as the `&dyn ToSql` slice tokio-postgres takes.
fn pg_refs(values: &[PgValue]) -> Vec<&(dyn tokio_postgres::types::ToSql + Sync)> {
    values
        .iter()
        .map(|v| v.as_ref() as &(dyn tokio_postgres::types::ToSql + Sync))
        .collect()
}

type PgValue = Box<dyn tokio_postgres::types::ToSql + Sync + Send>;

fn pg_values(params: &[Param]) -> Vec<PgValue> {
    params
        .iter()
        .map(|p| -> PgValue {
            match p {
                Param::Int(i) => Box::new(*i),
                Param::Text(t) => Box::new(t.clone()),
                Param::OptText(t) => Box::new(t.clone()),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_translate() {
        assert_eq!(
            dollar("a = ?1 AND b = ?12 OR c = '?'"),
            "a = $1 AND b = $12 OR c = '?'"
        );
    }
}
