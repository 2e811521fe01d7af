//! Private Redis and Postgres servers for fault tests, which kill and restart them: each runs on
//! its own free loopback port and in its own temporary directory, so the shared servers other
//! tests use are never touched. Both are stopped and their files removed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::eventually;

/// A loopback TCP port that is free right now, for a server started later on it. It is taken
/// below the kernel's ephemeral range: a port from that range (what binding port 0 gives) can
/// be handed to another socket or outgoing connection between this check and the server's own
/// bind, or while a private server is down for a restart, and a test would then talk to a
/// stranger.
pub fn free_port() -> u16 {
    let ephemeral_from = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u16, ephemeral_from);
    if high <= low + 1000 {
        return any_free_port();
    }
    loop {
        let random =
            u16::try_from(uuid::Uuid::new_v4().as_u128() % u128::from(high - low)).unwrap_or(0);
        let port = low + random;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn any_free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn temp_dir(kind: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("faceswap-{kind}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A `redis-server` of its own, without persistence; killing it loses every key.
pub struct PrivateRedis {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl PrivateRedis {
    /// Starts a server on a free port and waits until it answers.
    pub async fn start() -> Self {
        let mut redis = Self {
            port: free_port(),
            dir: temp_dir("redis"),
            child: None,
        };
        redis.restart().await;
        redis
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILLs the server (no shutdown, no save) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// (Re)starts the server on the same port, with an empty dataset, and waits until it
    /// answers `PING`.
    pub async fn restart(&mut self) {
        self.kill();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts (is it installed?)");
        self.child = Some(child);
        let port = self.port;
        eventually(
            Duration::from_secs(10),
            "the private Redis",
            || async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()?;
                s.write_all(b"PING\r\n").await.ok()?;
                let mut buf = [0u8; 7];
                s.read_exact(&mut buf).await.ok()?;
                (&buf == b"+PONG\r\n").then_some(())
            },
        )
        .await;
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Postgres cluster of its own (`initdb` + `pg_ctl`, trust authentication), run as the
/// `postgres` OS user when the tests run as root, since Postgres refuses to run as root.
pub struct PrivatePostgres {
    port: u16,
    dir: PathBuf,
    bin: PathBuf,
}

impl PrivatePostgres {
    /// Creates and starts a cluster on a free port.
    pub async fn start() -> Self {
        let pg = Self {
            port: free_port(),
            dir: temp_dir("postgres"),
            bin: postgres_bin(),
        };
        let data = pg.data_dir();
        let (dir, bin) = (pg.dir.clone(), pg.bin.clone());
        tokio::task::spawn_blocking(move || {
            if as_root() {
                run(Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(&dir));
            }
            run(pg_command(&bin, "initdb")
                .args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
                .arg("-D")
                .arg(&data));
        })
        .await
        .unwrap();
        pg.pg_ctl_start().await;
        pg
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server at once (`pg_ctl stop -m immediate`: connections are cut, no
    /// checkpoint, as in a crash).
    pub async fn stop_immediately(&self) {
        let mut cmd = pg_command(&self.bin, "pg_ctl");
        cmd.args(["stop", "-m", "immediate", "-w", "-D"])
            .arg(self.data_dir());
        tokio::task::spawn_blocking(move || run(&mut cmd))
            .await
            .unwrap();
    }

    /// Starts the server again on the same port (recovering from an immediate stop).
    pub async fn restart(&self) {
        self.pg_ctl_start().await;
    }

    async fn pg_ctl_start(&self) {
        let mut cmd = pg_command(&self.bin, "pg_ctl");
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            self.dir.display()
        );
        cmd.args(["start", "-w", "-t", "30", "-o", &options, "-l"])
            .arg(self.dir.join("server.log"))
            .arg("-D")
            .arg(self.data_dir());
        tokio::task::spawn_blocking(move || run(&mut cmd))
            .await
            .unwrap();
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = pg_command(&self.bin, "pg_ctl")
            .args(["stop", "-m", "immediate", "-D"])
            .arg(self.data_dir())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// The newest installed server's `bin` directory.
fn postgres_bin() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("Postgres server binaries in /usr/lib/postgresql")
        .filter_map(|e| {
            let e = e.ok()?;
            let version = e.file_name().to_str()?.parse().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, bin)| bin.join("pg_ctl").exists())
        .collect();
    found.sort();
    found.pop().expect("a Postgres server install").1
}

fn pg_command(bin: &Path, tool: &str) -> Command {
    let mut cmd = if as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(tool));
        c
    } else {
        Command::new(bin.join(tool))
    };
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    cmd
}

#[track_caller]
fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
