//! The command line: `serve`, `migrate`, `tenant create`, `tenant api-key`, `openapi`.

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
        /// What this process runs: the API, the background workers, or both.
        #[arg(long, value_enum, default_value = "all")]
        role: Role,
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
    /// Print the OpenAPI document (no database or network needed).
    Openapi,
}

/// Process roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// The HTTP API only.
    Api,
    /// The background workers only.
    Worker,
    /// Both.
    All,
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
        Command::Serve { role, args } => {
            let log_format = args.log_format;
            let config = (*args).into_config()?;
            crate::telemetry::init(log_format);
            let app = Application::build(config).await?;
            tracing::info!(addr = %app.local_addr(), ?role, "faceswap-gateway listening");
            app.run_until_stopped(shutdown_signal()).await
        }
        Command::Migrate { db } => {
            crate::telemetry::init(LogFormat::Pretty);
            let pool = connect_db(db.url()?, 2).await?;
            crate::MIGRATOR.run(&pool).await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Tenant { command } => tenant(command).await,
        Command::Openapi => {
            let doc = crate::http::openapi().to_pretty_json()?;
            println!("{doc}");
            Ok(())
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
        } => {
            let pool = connect_db(db.url()?, 2).await?;
            crate::MIGRATOR.run(&pool).await?;
            let created =
                tenants::create(&pool, &name, max_concurrent_sessions, session_seconds).await?;
            println!("{}", serde_json::to_string_pretty(&created)?);
            Ok(())
        }
        TenantCommand::ApiKey { db, tenant_id } => {
            let tenant =
                TenantId::parse(&tenant_id).map_err(|e| anyhow::anyhow!("--tenant-id: {e}"))?;
            let pool = connect_db(db.url()?, 2).await?;
            let created = tenants::create_api_key(&pool, tenant).await?;
            println!("{}", serde_json::to_string_pretty(&created)?);
            Ok(())
        }
    }
}
