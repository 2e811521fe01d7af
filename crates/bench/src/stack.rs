//! The processes under test: the simulator, nginx as a plain reverse proxy (and the static
//! server the simulator fetches `image_url` from), and gateway processes, each killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

/// Loopback ports: fixed, out of the way of the quick-start stack (9090, 8080).
pub const SIM_PORT: u16 = 19190;
pub const NGINX_PROXY_PORT: u16 = 19191;
pub const NGINX_STATIC_PORT: u16 = 19192;

/// A child process that dies with its handle.
pub struct Proc {
    pub name: String,
    child: Child,
    /// Stopped with SIGTERM first: a process with workers of its own (nginx) must be told, or
    /// its workers outlive it and keep its ports.
    terminate_first: bool,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command) -> anyhow::Result<Self> {
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name} ({cmd:?})"))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            terminate_first: false,
        })
    }

    /// [`Proc::spawn`] for a process stopped with SIGTERM (then SIGKILL after 5 s).
    pub fn spawn_terminated_on_drop(name: &str, cmd: &mut Command) -> anyhow::Result<Self> {
        let mut proc = Self::spawn(name, cmd)?;
        proc.terminate_first = true;
        Ok(proc)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory now and its peak since start (or since `reset_peak`), in bytes.
    pub fn memory(&self) -> anyhow::Result<Memory> {
        memory_of(self.pid())
    }

    /// Restarts the peak (VmHWM) from the current resident size.
    pub fn reset_peak(&self) -> anyhow::Result<()> {
        std::fs::write(format!("/proc/{}/clear_refs", self.pid()), "5")
            .context("resetting the peak RSS")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.terminate_first {
            let _ = Command::new("kill")
                .args(["-TERM", &self.pid().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Memory {
    pub rss: u64,
    pub peak: u64,
}

/// The unit of the CPU times in `/proc/<pid>/stat` (Linux's USER_HZ, 100 on every
/// architecture it runs on).
pub const TICKS_PER_SECOND: u64 = 100;

/// CPU time (user and system, in [`TICKS_PER_SECOND`]) used so far by `pid` and its children
/// (nginx's workers).
pub fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .with_context(|| format!("listing the children of pid {pid}"))?;
    let mut ticks = own_cpu_ticks(pid)?;
    for child in children.split_whitespace() {
        // A worker that exited since the listing took its time with it.
        ticks += own_cpu_ticks(child.parse()?).unwrap_or(0);
    }
    Ok(ticks)
}

fn own_cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_cpu_ticks(&stat).with_context(|| format!("malformed /proc/{pid}/stat: {stat}"))
}

/// utime + stime of a `/proc/<pid>/stat` line: fields 14 and 15, counted after the command
/// name, which is in parentheses and may itself hold spaces or parentheses.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let (_, after_name) = stat.rsplit_once(')')?;
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Reads VmRSS and VmHWM from `/proc`.
pub fn memory_of(pid: u32) -> anyhow::Result<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .with_context(|| format!("{name} missing for pid {pid}"))?;
        let kib: u64 = line
            .split_whitespace()
            .nth(1)
            .context("malformed /proc status")?
            .parse()?;
        Ok(kib * 1024)
    };
    Ok(Memory {
        rss: field("VmRSS:")?,
        peak: field("VmHWM:")?,
    })
}

/// Polls `url` until it answers 200; the time it took.
pub async fn wait_ready(url: &str, within: Duration) -> anyhow::Result<Duration> {
    let client = reqwest::Client::new();
    let started = Instant::now();
    loop {
        if let Ok(resp) = client.get(url).send().await
            && resp.status().is_success()
        {
            return Ok(started.elapsed());
        }
        if started.elapsed() > within {
            bail!("{url} not ready after {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Where the run keeps its files, and the binaries it starts.
pub struct Paths {
    pub bin_dir: PathBuf,
    pub work: PathBuf,
}

impl Paths {
    fn bin(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    fn log(&self, name: &str) -> anyhow::Result<Stdio> {
        Ok(std::fs::File::create(self.work.join(format!("{name}.log")))?.into())
    }
}

/// The simulator with no added latency, quotas large enough for every scenario, and small
/// recordings (closing 10,000 sessions would otherwise mint 2.5 GB of them).
pub async fn start_sim(paths: &Paths) -> anyhow::Result<Proc> {
    let proc = Proc::spawn(
        "simulator",
        Command::new(paths.bin("faceswap-sim"))
            .args(["--bind", &format!("127.0.0.1:{SIM_PORT}")])
            .args(["--max-open-sessions", "100000", "--recording-bytes", "1024"])
            .env("RUST_LOG", "warn")
            .stdout(paths.log("sim")?)
            .stderr(paths.log("sim.err")?),
    )?;
    wait_ready(&format!("{}/sim/stats", sim_url()), Duration::from_secs(10)).await?;
    Ok(proc)
}

pub fn sim_url() -> String {
    format!("http://127.0.0.1:{SIM_PORT}")
}

/// Changes simulator settings at run time (`POST /sim/config`).
pub async fn sim_config(knobs: Value) -> anyhow::Result<()> {
    sim_post("/sim/config", &knobs).await
}

/// Makes the simulator refuse every token issued so far (`POST /sim/expire-tokens`).
pub async fn sim_expire_tokens() -> anyhow::Result<()> {
    sim_post("/sim/expire-tokens", &json!({})).await
}

/// A call to one of the simulator's control routes, which answer 2xx when they took it.
async fn sim_post(path: &str, body: &Value) -> anyhow::Result<()> {
    let resp = reqwest::Client::new()
        .post(format!("{}{path}", sim_url()))
        .json(body)
        .send()
        .await?;
    if !resp.status().is_success() {
        bail!("sim {path} {body} refused: {}", resp.text().await?);
    }
    Ok(())
}

/// getToken calls a gateway has made, successful or not (its metrics).
pub async fn gateway_token_fetches(url: &str) -> anyhow::Result<u64> {
    let text = reqwest::get(format!("{url}/metrics"))
        .await?
        .error_for_status()?
        .text()
        .await?;
    let mut found = false;
    let mut sum = 0.0;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("faceswap_upstream_token_fetches_total") {
            let value = rest.rsplit(' ').next().unwrap_or_default();
            sum += value
                .parse::<f64>()
                .with_context(|| format!("unreadable metric line {line}"))?;
            found = true;
        }
    }
    if !found {
        bail!("{url}/metrics has no faceswap_upstream_token_fetches_total");
    }
    Ok(sum as u64)
}

/// A token straight from the simulator, for the direct and nginx runs.
pub async fn sim_token(base: &str) -> anyhow::Result<String> {
    get_token(base, "sim-client", "sim-secret").await
}

/// `getToken` with client credentials, on the simulator or the gateway (same contract).
async fn get_token(base: &str, client_id: &str, client_secret: &str) -> anyhow::Result<String> {
    let answer: Value = reqwest::Client::new()
        .post(format!("{base}/api/open/v3/getToken"))
        .json(&json!({"clientId": client_id, "clientSecret": client_secret}))
        .send()
        .await?
        .json()
        .await?;
    answer["token"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no token in {answer}"))
}

/// nginx as a plain reverse proxy to the simulator, configured as one would in production
/// (upstream keep-alive, no access log, request bodies buffered in memory), plus a static
/// server for the image the simulator fetches.
pub async fn start_nginx(paths: &Paths, image: &Path) -> anyhow::Result<Proc> {
    let dir = paths.work.join("nginx");
    let html = dir.join("html");
    std::fs::create_dir_all(&html)?;
    std::fs::copy(image, html.join("face.jpg"))?;
    // Running as root, nginx's workers switch to `nobody` unless told otherwise.
    let user = if running_as_root() { "user root;" } else { "" };
    let conf = format!(
        r#"{user}
worker_processes auto;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 1000000;
    upstream sim {{
        server 127.0.0.1:{SIM_PORT};
        keepalive 256;
    }}
    server {{
        listen 127.0.0.1:{NGINX_PROXY_PORT};
        client_max_body_size 32m;
        client_body_buffer_size 32m;
        location / {{
            proxy_pass http://sim;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
    server {{
        listen 127.0.0.1:{NGINX_STATIC_PORT};
        root {html};
    }}
}}
"#,
        dir = dir.display(),
        html = html.display(),
    );
    let conf_path = dir.join("nginx.conf");
    std::fs::write(&conf_path, conf)?;
    // Something else on these ports would answer instead of this nginx, silently.
    for port in [NGINX_PROXY_PORT, NGINX_STATIC_PORT] {
        std::net::TcpListener::bind(("127.0.0.1", port)).with_context(|| {
            format!("port {port} is taken (an nginx left by an earlier run? `ss -ltnp` names it)")
        })?;
    }
    let proc = Proc::spawn_terminated_on_drop(
        "nginx",
        Command::new("nginx")
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&conf_path)
            .args(["-g", "daemon off;"])
            .stdout(paths.log("nginx")?)
            .stderr(paths.log("nginx.err")?),
    )?;
    wait_ready(
        &format!("http://127.0.0.1:{NGINX_STATIC_PORT}/face.jpg"),
        Duration::from_secs(10),
    )
    .await?;
    Ok(proc)
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// What every gateway process of the run shares.
pub struct GatewayEnv {
    pub database_url: String,
    pub redis_url: String,
}

/// A gateway process and where it listens.
pub struct Gateway {
    pub proc: Proc,
    pub url: String,
    /// Time from spawn to the first 200 on `/readyz`.
    pub ready_after: Duration,
}

/// Starts `faceswap-gateway serve` on `port` with its own Redis prefix (so its upstream token
/// starts cold) and `extra` settings.
pub async fn start_gateway(
    paths: &Paths,
    env: &GatewayEnv,
    name: &str,
    port: u16,
    extra: &[(&str, &str)],
) -> anyhow::Result<Gateway> {
    let url = format!("http://127.0.0.1:{port}");
    let mut cmd = Command::new(paths.bin("faceswap-gateway"));
    cmd.arg("serve")
        .env("DATABASE_URL", &env.database_url)
        .env("REDIS_URL", &env.redis_url)
        .env("GATEWAY_REDIS_PREFIX", redis_prefix(name))
        .env("GATEWAY_BIND", format!("127.0.0.1:{port}"))
        .env("UPSTREAM_BASE_URL", sim_url())
        .env("UPSTREAM_CLIENT_ID", "sim-client")
        .env("UPSTREAM_CLIENT_SECRET", "sim-secret")
        .env("GATEWAY_SSRF_ALLOW", "127.0.0.1/32")
        .env(
            "OBJECT_STORE_URL",
            format!("file://{}", paths.work.join("archive").display()),
        )
        .env("RUST_LOG", "warn")
        .stdout(paths.log(name)?)
        .stderr(paths.log(&format!("{name}.err"))?);
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let proc = Proc::spawn(name, &mut cmd)?;
    let ready_after = wait_ready(&format!("{url}/readyz"), Duration::from_secs(30)).await?;
    Ok(Gateway {
        proc,
        url,
        ready_after,
    })
}

/// The Redis prefix of the gateway process called `name` in this run.
pub fn redis_prefix(name: &str) -> String {
    format!("bench:{}:{name}:", std::process::id())
}

/// Runs a `faceswap-gateway` admin subcommand against the bench database; its stdout.
pub fn gateway_cli(paths: &Paths, env: &GatewayEnv, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(paths.bin("faceswap-gateway"))
        .args(args)
        .env("DATABASE_URL", &env.database_url)
        .env("REDIS_URL", &env.redis_url)
        .env("RUST_LOG", "warn")
        .stderr(Stdio::inherit())
        .output()?;
    if !out.status.success() {
        bail!("faceswap-gateway {args:?} failed");
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// A tenant's credentials.
pub struct Tenant {
    pub name: String,
    pub id: String,
    pub client_id: String,
    pub client_secret: String,
}

/// Creates a tenant whose rate limit is far above anything the run offers (the limiter still
/// runs on every request) with room for `sessions` open sessions.
pub fn create_tenant(
    paths: &Paths,
    env: &GatewayEnv,
    name: &str,
    sessions: u32,
) -> anyhow::Result<Tenant> {
    let out = gateway_cli(
        paths,
        env,
        &[
            "tenant",
            "create",
            "--name",
            name,
            "--max-concurrent-sessions",
            &sessions.to_string(),
            "--requests-per-second",
            "1000000",
            "--burst",
            "1000000",
        ],
    )?;
    let v: Value = serde_json::from_str(&out).with_context(|| format!("tenant create: {out}"))?;
    let field = |k: &str| {
        v[k].as_str()
            .map(str::to_owned)
            .with_context(|| format!("{k} missing in {v}"))
    };
    Ok(Tenant {
        name: name.to_owned(),
        id: field("tenant_id")?,
        client_id: field("client_id")?,
        client_secret: field("client_secret")?,
    })
}

/// The gateway's JWT for a tenant.
pub async fn gateway_token(url: &str, tenant: &Tenant) -> anyhow::Result<String> {
    get_token(url, &tenant.client_id, &tenant.client_secret).await
}

/// Runs one SQL statement with `psql`.
pub fn psql(url: &str, sql: &str) -> anyhow::Result<()> {
    let ok = Command::new("psql")
        .arg(url)
        .args(["-qc", sql])
        .status()?
        .success();
    anyhow::ensure!(ok, "psql {sql} failed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_user_plus_system_time_counted_after_the_command_name() {
        // A name with spaces and parentheses would shift a naive split.
        let stat = "4242 (nginx: worker (x) ) S 1 4242 4242 0 -1 4194624 \
                    1000 0 0 0 250 75 0 0 20 0 1 0 12345 1000000 500";
        assert_eq!(parse_cpu_ticks(stat), Some(325));
        assert_eq!(parse_cpu_ticks("4242 (short) S 1"), None);
        let mine = cpu_ticks(std::process::id()).unwrap();
        assert!(cpu_ticks(std::process::id()).unwrap() >= mine);
    }
}
