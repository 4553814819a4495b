//! The `landworld-server` binary: parses the CLI and hands over to the library.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use landworld_server::api::routes::auth::create_user;
use landworld_server::app::open_database;
use landworld_server::chat::crypto::{Keyring, rotate_and_reseal};
use landworld_server::config::{Cli, Command};
use landworld_server::{Application, sched, telemetry};

// `--features system-alloc` keeps the system allocator, so that heap profilers that hook
// `malloc` (heaptrack, valgrind's massif) see the server's allocations (docs/performance.md).
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Serving: the server's threads (all started after this, so they inherit it) ahead of
    // ordinary processes; the world and fan-out threads set their own (see `sched`).
    let priority = match cli.command {
        None | Some(Command::Serve(_)) => Some(sched::set_current_thread_nice(sched::SERVER_NICE)),
        _ => None,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli, priority)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli, priority: Option<std::io::Result<()>>) -> anyhow::Result<()> {
    match cli.command {
        None => serve(cli.serve, priority).await,
        Some(Command::Serve(opts)) => serve(opts, priority).await,
        Some(Command::Migrate(opts)) => {
            let config = opts.resolve()?;
            telemetry::init_logging(&config.log);
            let db = open_database(&config).await?;
            println!("migrations applied ({})", db.backend());
            db.close().await;
            Ok(())
        }
        Some(Command::LoadUsers(args)) => {
            let config = args.opts.clone().resolve()?;
            telemetry::init_logging(&config.log);
            let db = open_database(&config).await?;
            let result = landworld_server::load_users::run(&config, &db, &args).await;
            db.close().await;
            let summary = result?;
            eprintln!(
                "load-users: {} created, {} reused, {} tokens written to {}",
                summary.created,
                summary.reused,
                summary.written,
                args.out.display()
            );
            Ok(())
        }
        Some(Command::RotateKey(opts)) => {
            let config = opts.resolve()?;
            telemetry::init_logging(&config.log);
            let db = open_database(&config).await?;
            let ring = Keyring::load_or_create(config.message_key.as_deref(), &config.data_dir)?;
            let result = rotate_and_reseal(&db, &ring).await;
            db.close().await;
            let r = result?;
            println!(
                "key {} is now current; {} messages re-encrypted, {} could not be",
                r.key_id, r.resealed, r.failed
            );
            if r.failed > 0 {
                anyhow::bail!("{} messages did not decrypt with any known key", r.failed);
            }
            Ok(())
        }
        Some(Command::CreateAdmin { username, password, opts }) => {
            let config = opts.resolve()?;
            telemetry::init_logging(&config.log);
            let db = open_database(&config).await?;
            let result = match db.user_by_username(&username).await? {
                Some(user) => {
                    db.set_user_role(user.id, "admin").await?;
                    println!("user {} ({}) is now an admin", user.username, user.id);
                    Ok(())
                }
                None => match create_user(&db, &username, &password, None, "admin").await {
                    Ok(user) => {
                        println!("admin {} created ({})", user.username, user.id);
                        Ok(())
                    }
                    Err(e) => Err(anyhow::anyhow!("cannot create admin: {e}")),
                },
            };
            db.close().await;
            result
        }
    }
}

async fn serve(
    opts: landworld_server::config::ServeOptions,
    priority: Option<std::io::Result<()>>,
) -> anyhow::Result<()> {
    let config = opts.resolve()?;
    telemetry::init_logging(&config.log);
    match priority {
        Some(Ok(())) => tracing::debug!(nice = sched::SERVER_NICE, "server threads' priority raised"),
        Some(Err(e)) => tracing::info!(error = %e, "the server's threads keep their priority"),
        None => {}
    }
    let app = Application::build(config).await.context("starting the server")?;
    let token = app.shutdown_token();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("signal received; shutting down");
        token.cancel();
    });
    app.run().await
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
