//! A fresh PostgreSQL database per test: [`TestDatabase::create`] makes
//! `stow_test_<random>` through the admin URL and dropping the guard drops
//! the database again (connections still open to it included).
//!
//! The admin URL is `STOW_TEST_DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres` (a URL, not a key=value
//! string). `scripts/test.sh` guarantees a server there: it starts a
//! private cluster (`scripts/postgres.sh`) when nothing answers on
//! 127.0.0.1:5432, so these tests are never skipped.
#![allow(dead_code)]

use stow_exporter::redact::mask_url;
use tokio_postgres::NoTls;

/// Where the tests find PostgreSQL when `STOW_TEST_DATABASE_URL` is unset.
pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The URL the tests create and drop their databases through.
pub fn admin_url() -> String {
    std::env::var("STOW_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_string())
}

/// `url` naming database `name` instead of its own.
pub fn with_database(url: &str, name: &str) -> String {
    let (head, query) = match url.find('?') {
        Some(i) => url.split_at(i),
        None => (url, ""),
    };
    let start = head.find("://").map_or(0, |i| i + 3);
    let cut = head[start..].find('/').map_or(head.len(), |i| start + i);
    format!("{}/{name}{query}", &head[..cut])
}

/// An admin connection; its connection task runs on the current runtime.
pub async fn admin_client() -> tokio_postgres::Client {
    client(&admin_url()).await
}

/// A connection to `url` (for looking into a store's tables).
pub async fn client(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "PostgreSQL at {} (set STOW_TEST_DATABASE_URL; scripts/test.sh starts a private \
                 server when none answers on 127.0.0.1:5432): {e}",
                mask_url(url)
            )
        });
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// A database made for one test, dropped with the guard.
pub struct TestDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl TestDatabase {
    /// Creates `stow_test_<random>`.
    pub async fn create() -> TestDatabase {
        let admin_url = admin_url();
        let name = format!("stow_test_{:016x}", rand::random::<u64>());
        admin_client()
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        TestDatabase {
            url: with_database(&admin_url, &name),
            admin_url,
            name,
        }
    }

    /// The URL of the database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Drop runs inside the test's runtime, which cannot block on a
        // future: the drop gets a runtime of its own on a thread of its
        // own, and this thread waits for it, so no database outlives the
        // test. FORCE ends the connections a store's pool still holds.
        type Failed = Box<dyn std::error::Error + Send + Sync>;
        let dropped = std::thread::spawn(move || -> Result<(), Failed> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let (client, conn) = tokio_postgres::connect(&admin_url, NoTls).await?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await?;
                Ok(())
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("cannot drop test database {}: {e}", self.name),
            Err(_) => eprintln!(
                "cannot drop test database {}: the thread panicked",
                self.name
            ),
        }
    }
}

/// A private PostgreSQL server (`scripts/postgres.sh`) on a free loopback
/// port with all its state in a directory of its own; it can be stopped
/// and started again (a restart), and is stopped by its PID when dropped.
pub struct PrivateServer {
    dir: tempfile::TempDir,
    port: u16,
}

impl PrivateServer {
    fn script() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/postgres.sh")
    }

    /// Makes the cluster and starts it.
    pub async fn start() -> PrivateServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let s = PrivateServer {
            dir: tempfile::tempdir().unwrap(),
            port,
        };
        s.up().await;
        s
    }

    /// Its `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server (again); returns once it takes connections.
    pub async fn up(&self) {
        let out = tokio::process::Command::new(Self::script())
            .arg("start")
            .arg(self.dir.path())
            .arg(self.port.to_string())
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "postgres.sh start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops the server (a fast shutdown: sessions are ended); returns
    /// once it no longer answers.
    pub async fn down(&self) {
        let out = tokio::process::Command::new(Self::script())
            .arg("stop")
            .arg(self.dir.path())
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "postgres.sh stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let start = std::time::Instant::now();
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_ok()
        {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(30),
                "PostgreSQL still answers after stop"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        let _ = std::process::Command::new(Self::script())
            .arg("stop")
            .arg(self.dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}
