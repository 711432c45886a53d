//! A real PostgreSQL for the tests: Debian's `postgresql` package (installed by
//! tests/install-deps.sh), one server per test binary ([`shared`]) or one for a test that
//! stops and starts it ([`Pg::start`]), each in its own temporary directory on a free loopback
//! port, with a fresh database per test ([`Pg::database`]). PostgreSQL refuses to run as root:
//! as root, `initdb` and `postgres` run as the `postgres` user the package creates. The server
//! is started from a thread that lives as long as the [`Pg`] (the shared one: as long as the
//! test binary) and gets SIGKILL when that thread's process ends (PR_SET_PDEATHSIG, set after
//! the change of user, which would clear it), so none is left behind.
#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// A server: its port, its data directory, and the thread that owns its process.
pub struct Pg {
    pub port: u16,
    data: PathBuf,
    _dir: tempfile::TempDir,
    control: Mutex<mpsc::Sender<(Control, mpsc::Sender<()>)>>,
}

enum Control {
    Start,
    /// Stops the server with this signal (SIGINT: fast shutdown; SIGKILL: a crash) and waits.
    Stop(i32),
}

static SHARED: OnceLock<Pg> = OnceLock::new();
static NEXT_DB: AtomicU32 = AtomicU32::new(0);

/// The test binary's server, started at the first call.
pub fn shared() -> &'static Pg {
    SHARED.get_or_init(Pg::start)
}

/// The directory of the package's programs: the newest /usr/lib/postgresql/N/bin.
fn bin_dir() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((v, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, b)| b)
        .expect("no /usr/lib/postgresql/N/bin/postgres: run tests/install-deps.sh (Debian's postgresql package)")
}

/// The user the server runs as when the tests run as root: (uid, gid) of `postgres`.
fn run_as() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let name = c"postgres";
    // SAFETY: getpwnam reads the password database; the result is copied out at once, and the
    // tests do not call getpw* concurrently with this.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(
        !pw.is_null(),
        "running as root and there is no `postgres` user to run the server as: run tests/install-deps.sh"
    );
    // SAFETY: pw is not null and points to a passwd record.
    unsafe { Some(((*pw).pw_uid, (*pw).pw_gid)) }
}

fn as_user(cmd: &mut Command) {
    if let Some((uid, gid)) = run_as() {
        // std drops root's supplementary groups (setgroups) before it changes the user.
        cmd.uid(uid).gid(gid).env("HOME", "/tmp");
    }
}

/// Removes the directories of servers whose test binary has ended: the shared server's is never
/// dropped (statics are not), so it is removed by the next run instead.
fn remove_stale() {
    for e in std::fs::read_dir(std::env::temp_dir())
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("auditship-pg-"))
            .and_then(|n| n.split('-').next())
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: signal 0 only checks that the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if !alive {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        // Stopped before its directory is removed.
        self.down(true);
    }
}

impl Pg {
    /// A server of its own: `initdb` in a new temporary directory, then `postgres` on a free
    /// loopback port, waited for until it accepts connections.
    pub fn start() -> Pg {
        let bin = bin_dir();
        remove_stale();
        let dir = tempfile::Builder::new()
            .prefix(&format!("auditship-pg-{}-", std::process::id()))
            .tempdir()
            .unwrap();
        let data = dir.path().join("data");
        if let Some((uid, gid)) = run_as() {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        }
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .args(["--locale=C"])
            .stdin(Stdio::null());
        as_user(&mut initdb);
        let out = initdb.output().expect("running initdb");
        assert!(
            out.status.success(),
            "initdb: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let (tx, rx) = mpsc::channel::<(Control, mpsc::Sender<()>)>();
        let postgres = bin.join("postgres");
        let args: Vec<String> = vec![
            "-D".into(),
            data.display().to_string(),
            "-p".into(),
            port.to_string(),
            "-c".into(),
            "listen_addresses=127.0.0.1".into(),
            "-c".into(),
            "unix_socket_directories=".into(),
            "-c".into(),
            "fsync=off".into(),
            "-c".into(),
            "max_connections=200".into(),
        ];
        let log = dir.path().join("postgres.log");
        // The thread that starts the server lives as long as this Pg (its channel) or, for the
        // shared one, the test binary; the server's parent-death signal is tied to it.
        std::thread::spawn(move || {
            let mut child: Option<Child> = None;
            while let Ok((what, done)) = rx.recv() {
                match what {
                    Control::Start => {
                        let mut cmd = Command::new(&postgres);
                        cmd.args(&args)
                            .stdin(Stdio::null())
                            .stdout(Stdio::null())
                            .stderr(
                                std::fs::OpenOptions::new()
                                    .create(true)
                                    .append(true)
                                    .open(&log)
                                    .unwrap(),
                            );
                        as_user(&mut cmd);
                        // SAFETY: prctl is async-signal-safe; it runs after std changed the
                        // user (a change of credentials clears the parent-death signal).
                        unsafe {
                            cmd.pre_exec(|| {
                                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                                Ok(())
                            });
                        }
                        child = Some(cmd.spawn().expect("starting postgres"));
                    }
                    Control::Stop(sig) => {
                        if let Some(mut c) = child.take() {
                            // A crash takes the server's backends with it, as a lost node does:
                            // a postmaster killed alone leaves them serving their connections
                            // until they notice, and a commit could still go through.
                            if sig == libc::SIGKILL {
                                for pid in children_of(c.id()) {
                                    // SAFETY: kill on a pid; at worst it has exited already.
                                    unsafe { libc::kill(pid as i32, sig) };
                                }
                            }
                            // SAFETY: kill on the pid of a child not yet waited for.
                            unsafe { libc::kill(c.id() as i32, sig) };
                            let _ = c.wait();
                        }
                    }
                }
                let _ = done.send(());
            }
            if let Some(mut c) = child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        });
        let pg = Pg {
            port,
            data,
            _dir: dir,
            control: Mutex::new(tx),
        };
        pg.up();
        pg
    }

    fn control(&self, what: Control) {
        let (done, wait) = mpsc::channel();
        self.control.lock().unwrap().send((what, done)).unwrap();
        wait.recv().unwrap();
    }

    /// Starts the server (again) and waits until it accepts connections.
    pub fn up(&self) {
        self.control(Control::Start);
        let started = Instant::now();
        loop {
            let ok = Command::new(bin_dir().join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "postgres did not accept connections within 60 s; its log: {}",
                std::fs::read_to_string(self.log()).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server: `crash` kills it (SIGKILL, as a lost node), otherwise a fast shutdown
    /// (SIGINT: open connections are ended). Returns once it has exited.
    pub fn down(&self, crash: bool) {
        self.control(Control::Stop(if crash {
            libc::SIGKILL
        } else {
            libc::SIGINT
        }));
    }

    /// Turns TLS on (`ssl = on` with `cert` and `key`, PEM files, copied into the data
    /// directory for the server's user) and reloads the configuration: new connections may
    /// then use TLS; connections without it are still accepted (`host` lines of pg_hba).
    pub async fn enable_tls(&self, cert: &Path, key: &Path) {
        for (from, to) in [(cert, "server.crt"), (key, "server.key")] {
            let dest = self.data.join(to);
            std::fs::copy(from, &dest).unwrap();
            std::fs::set_permissions(&dest, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .unwrap();
            if let Some((uid, gid)) = run_as() {
                std::os::unix::fs::chown(&dest, Some(uid), Some(gid)).unwrap();
            }
        }
        let (client, conn) = tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls)
            .await
            .expect("connecting to the test server");
        let task = tokio::spawn(conn);
        // One statement at a time: ALTER SYSTEM cannot run in the implicit transaction of a
        // multi-statement string.
        for sql in [
            "ALTER SYSTEM SET ssl_cert_file = 'server.crt'",
            "ALTER SYSTEM SET ssl_key_file = 'server.key'",
            "ALTER SYSTEM SET ssl = on",
            "SELECT pg_reload_conf()",
        ] {
            client.batch_execute(sql).await.unwrap();
        }
        drop(client);
        let _ = task.await;
        // The postmaster applies a reload asynchronously.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    pub fn log(&self) -> PathBuf {
        self.data
            .parent()
            .unwrap_or(Path::new("/"))
            .join("postgres.log")
    }

    /// The URL of `db` on this server.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{db}?connect_timeout=5",
            self.port
        )
    }

    /// A fresh, empty database for one test; its URL.
    pub async fn database(&self) -> String {
        let name = format!("t{}", NEXT_DB.fetch_add(1, Ordering::Relaxed));
        let (client, conn) = tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls)
            .await
            .expect("connecting to the test server");
        let task = tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        drop(client);
        let _ = task.await;
        self.url(&name)
    }

    /// [`Pg::down`] off the async runtime (it waits for the server's processes).
    pub async fn down_async(self: &std::sync::Arc<Self>, crash: bool) {
        let pg = self.clone();
        tokio::task::spawn_blocking(move || pg.down(crash))
            .await
            .unwrap();
    }

    /// [`Pg::up`] off the async runtime.
    pub async fn up_async(self: &std::sync::Arc<Self>) {
        let pg = self.clone();
        tokio::task::spawn_blocking(move || pg.up()).await.unwrap();
    }

    /// Transactions committed and rolled back in the database of `url` so far (the server's
    /// statistics, which it reports with a short delay).
    pub async fn xacts(&self, url: &str) -> i64 {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .expect("connecting to the test server");
        let task = tokio::spawn(conn);
        client
            .batch_execute("SELECT pg_stat_clear_snapshot()")
            .await
            .unwrap();
        let n: i64 = client
            .query_one(
                "SELECT (xact_commit + xact_rollback)::bigint FROM pg_stat_database WHERE datname = current_database()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        drop(client);
        let _ = task.await;
        n
    }
}

/// The processes whose parent is `pid` (from /proc).
fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(child) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid …`: comm may hold spaces, so read after its last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(child);
        }
    }
    out
}
