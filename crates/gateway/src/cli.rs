//! The command line: `serve`, `migrate`, `tenant create`, `tenant api-key`, `keys rotate`,
//! `openapi`.

use clap::{Parser, Subcommand};

use crate::config::{LogFormat, ServeArgs};
use crate::domain::ids::TenantId;
use crate::service::tenants;
use crate::startup::{Application, connect_db, shutdown_signal};

/// Multi-tenant gateway for the Live Face Swap API.
#[derive(Debug, Parser)]
#[command(name = "faceswap-gateway", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway (applies migrations first unless GATEWAY_SKIP_MIGRATIONS is set).
    Serve {
        #[command(flatten)]
        args: Box<ServeArgs>,
    },
    /// Apply the database migrations and exit.
    Migrate {
        #[command(flatten)]
        db: DbArgs,
    },
    /// Manage tenants.
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// Manage the token signing keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Print the OpenAPI document (no database or network needed).
    Openapi,
    /// Container health check: GET the URL (default `/readyz` on the port of GATEWAY_BIND);
    /// exit 0 only on 200. Loads no configuration.
    Healthcheck {
        /// What to GET, `http://host:port/path`.
        #[arg(long)]
        url: Option<String>,
    },
}

#[derive(Debug, clap::Args)]
struct DbArgs {
    /// Postgres connection URL.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
}

impl DbArgs {
    fn url(&self) -> anyhow::Result<&str> {
        self.database_url
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("missing setting DATABASE_URL: the Postgres URL"))
    }
}

#[derive(Debug, Subcommand)]
enum TenantCommand {
    /// Create a tenant; prints `{tenant_id, client_id, client_secret}` (the secret only here).
    Create {
        #[command(flatten)]
        db: DbArgs,
        /// Display name.
        #[arg(long)]
        name: String,
        /// Sessions the tenant may have open at once.
        #[arg(long, default_value_t = tenants::DEFAULT_MAX_CONCURRENT_SESSIONS)]
        max_concurrent_sessions: i32,
        /// Total session-seconds the tenant may use (no budget when unset).
        #[arg(long)]
        session_seconds: Option<i64>,
        /// Seconds without a call naming a session before it is closed as idle.
        #[arg(long, default_value_t = tenants::DEFAULT_IDLE_TIMEOUT_SECONDS)]
        idle_timeout_seconds: i32,
        /// Longest a session may stay open, in seconds.
        #[arg(long, default_value_t = tenants::DEFAULT_MAX_SESSION_SECONDS)]
        max_session_seconds: i32,
        /// Days archived resources are kept before they are deleted.
        #[arg(long, default_value_t = crate::service::archive::DEFAULT_RETENTION_DAYS)]
        archive_retention_days: i32,
        /// Sustained requests per second (over it: 429 with code 1005).
        #[arg(long, default_value_t = crate::domain::rate::DEFAULT_REQUESTS_PER_SECOND)]
        requests_per_second: i32,
        /// Requests allowed at once after a quiet period.
        #[arg(long, default_value_t = crate::domain::rate::DEFAULT_BURST)]
        burst: i32,
        /// When a tenant with this name exists, create none and print `{tenant_id, existed}`
        /// (no credentials). For seed jobs; not atomic against a concurrent create of the name.
        #[arg(long)]
        if_not_exists: bool,
    },
    /// Change a tenant's quota or session settings (only the flags given).
    Update {
        #[command(flatten)]
        db: DbArgs,
        /// The tenant (`ten_…`).
        #[arg(long)]
        tenant_id: String,
        /// Sessions the tenant may have open at once.
        #[arg(long)]
        max_concurrent_sessions: Option<i32>,
        /// Total session-seconds the tenant may use.
        #[arg(long, conflicts_with = "no_session_budget")]
        session_seconds: Option<i64>,
        /// Remove the session-seconds budget.
        #[arg(long)]
        no_session_budget: bool,
        /// Idle timeout, seconds.
        #[arg(long)]
        idle_timeout_seconds: Option<i32>,
        /// Longest session, seconds.
        #[arg(long)]
        max_session_seconds: Option<i32>,
        /// Days archived resources are kept (applies to those already archived too).
        #[arg(long)]
        archive_retention_days: Option<i32>,
        /// Sustained requests per second.
        #[arg(long)]
        requests_per_second: Option<i32>,
        /// Requests allowed at once after a quiet period.
        #[arg(long)]
        burst: Option<i32>,
    },
    /// Issue an API key (usable as `x-api-key`) to a tenant; prints it once.
    ApiKey {
        #[command(flatten)]
        db: DbArgs,
        /// The tenant (`ten_…`).
        #[arg(long)]
        tenant_id: String,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Make a new key sign tokens and retire the previous ones, which keep verifying until
    /// every token they signed has expired; prints `{kid, retired}`. Every replica signs with
    /// the new key within GATEWAY_JWT_KEY_REFRESH_MS. Refused when GATEWAY_JWT_PRIVATE_KEY_FILE
    /// is set: that key is rotated by its operator.
    Rotate {
        #[command(flatten)]
        db: DbArgs,
        /// The configured signing key, if any (only checked for presence).
        #[arg(
            long,
            env = "GATEWAY_JWT_PRIVATE_KEY_FILE",
            value_name = "GATEWAY_JWT_PRIVATE_KEY_FILE"
        )]
        jwt_private_key_file: Option<std::path::PathBuf>,
    },
}

/// Who the audit log records for a command-line action.
fn cli_actor() -> String {
    format!(
        "cli:{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into())
    )
}

/// Parses the command line and runs it; returns the process exit code.
pub async fn run() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                return 0;
            }
            // One line that names the setting, not the whole usage text.
            let text = e.to_string();
            let line = text.lines().next().unwrap_or("invalid arguments");
            eprintln!("faceswap-gateway: {}", line.trim_start_matches("error: "));
            return 2;
        }
    };
    match execute(cli.command).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("faceswap-gateway: {e:#}");
            1
        }
    }
}

async fn execute(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve { args } => {
            let log_format = args.log_format;
            let config = (*args).into_config()?;
            let tracer_provider = crate::telemetry::init(log_format)?;
            let served = async {
                let app = Application::build(config).await?;
                tracing::info!(addr = %app.local_addr(), role = ?app.role(), "faceswap-gateway listening");
                app.run_until_stopped(shutdown_signal()).await
            }
            .await;
            // Flushes buffered spans; the exporter's thread blocks, so off the runtime.
            let _ = tokio::task::spawn_blocking(move || {
                crate::telemetry::shutdown(tracer_provider);
            })
            .await;
            served
        }
        Command::Migrate { db } => {
            crate::telemetry::init_logs(LogFormat::Pretty);
            let pool = connect_db(db.url()?, 2).await?;
            crate::MIGRATOR.run(&pool).await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Tenant { command } => tenant(command).await,
        Command::Keys {
            command:
                KeysCommand::Rotate {
                    db,
                    jwt_private_key_file,
                },
        } => {
            anyhow::ensure!(
                jwt_private_key_file.is_none(),
                "{}",
                crate::auth::jwt::CONFIGURED_KEY_NOT_ROTATED
            );
            let pool = connect_db(db.url()?, 2).await?;
            crate::MIGRATOR.run(&pool).await?;
            let rotated = crate::auth::jwt::rotate(&pool, &cli_actor()).await?;
            let shown = serde_json::json!({"kid": rotated.kid, "retired": rotated.retired});
            println!("{}", serde_json::to_string_pretty(&shown)?);
            Ok(())
        }
        Command::Openapi => {
            let doc = crate::http::openapi().to_pretty_json()?;
            println!("{doc}");
            Ok(())
        }
        Command::Healthcheck { url } => {
            let url = url.unwrap_or_else(|| {
                crate::healthcheck::default_url(std::env::var("GATEWAY_BIND").ok().as_deref())
            });
            crate::healthcheck::check(&url).await
        }
    }
}

async fn tenant(command: TenantCommand) -> anyhow::Result<()> {
    match command {
        TenantCommand::Create {
            db,
            name,
            max_concurrent_sessions,
            session_seconds,
            idle_timeout_seconds,
            max_session_seconds,
            archive_retention_days,
            requests_per_second,
            burst,
            if_not_exists,
        } => {
            crate::service::archive::check_retention_days(archive_retention_days)?;
            let pool = connect_db(db.url()?, 2).await?;
            crate::MIGRATOR.run(&pool).await?;
            if if_not_exists {
                let existing: Option<uuid::Uuid> = sqlx::query_scalar(
                    "select tenant_id from tenants where name = $1 order by created_at limit 1",
                )
                .bind(&name)
                .fetch_optional(&pool)
                .await?;
                if let Some(id) = existing {
                    let shown =
                        serde_json::json!({"tenant_id": TenantId(id).to_string(), "existed": true});
                    println!("{}", serde_json::to_string_pretty(&shown)?);
                    return Ok(());
                }
            }
            let settings = tenants::TenantSettings {
                name,
                max_concurrent_sessions,
                session_seconds_budget: session_seconds,
                idle_timeout_seconds,
                max_session_seconds,
                requests_per_second,
                burst,
            };
            let created = tenants::create(&pool, &settings, &cli_actor()).await?;
            let id = TenantId::parse(&created.tenant_id)?;
            crate::service::archive::set_retention(&pool, id, archive_retention_days).await?;
            println!("{}", serde_json::to_string_pretty(&created)?);
            Ok(())
        }
        TenantCommand::Update {
            db,
            tenant_id,
            max_concurrent_sessions,
            session_seconds,
            no_session_budget,
            idle_timeout_seconds,
            max_session_seconds,
            archive_retention_days,
            requests_per_second,
            burst,
        } => {
            if let Some(days) = archive_retention_days {
                crate::service::archive::check_retention_days(days)?;
            }
            let tenant =
                TenantId::parse(&tenant_id).map_err(|e| anyhow::anyhow!("--tenant-id: {e}"))?;
            let pool = connect_db(db.url()?, 2).await?;
            let changes = tenants::TenantChanges {
                max_concurrent_sessions,
                session_seconds_budget: if no_session_budget {
                    Some(None)
                } else {
                    session_seconds.map(Some)
                },
                idle_timeout_seconds,
                max_session_seconds,
                requests_per_second,
                burst,
            };
            let row = tenants::update(&pool, tenant, &changes, &cli_actor()).await?;
            let archive_retention_days = match archive_retention_days {
                Some(days) => crate::service::archive::set_retention(&pool, tenant, days).await?,
                None => crate::service::archive::retention(&pool, tenant).await?,
            };
            let shown = serde_json::json!({
                "archive_retention_days": archive_retention_days,
                "tenant_id": tenant.to_string(),
                "max_concurrent_sessions": row.max_concurrent_sessions,
                "session_seconds_budget": row.session_seconds_budget,
                "idle_timeout_seconds": row.idle_timeout_seconds,
                "max_session_seconds": row.max_session_seconds,
                "requests_per_second": row.requests_per_second,
                "burst": row.burst,
            });
            println!("{}", serde_json::to_string_pretty(&shown)?);
            Ok(())
        }
        TenantCommand::ApiKey { db, tenant_id } => {
            let tenant =
                TenantId::parse(&tenant_id).map_err(|e| anyhow::anyhow!("--tenant-id: {e}"))?;
            let pool = connect_db(db.url()?, 2).await?;
            let created = tenants::create_api_key(&pool, tenant, &cli_actor()).await?;
            println!("{}", serde_json::to_string_pretty(&created)?);
            Ok(())
        }
    }
}
