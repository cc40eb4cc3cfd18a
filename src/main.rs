//! The `llm-keyproxy` command: arguments -> plan -> bind -> run, and exit codes
//! (0 clean, 64 bad config or arguments, 1 runtime failure).
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use llm_keyproxy::config::plan::Plan;
use llm_keyproxy::telemetry::logging::{self, LogFormat};
use llm_keyproxy::{run, Bound, Shared};

const EXIT_CONFIG: u8 = 64;

/// Keeps LLM API keys out of an AI agent's reach: one local listener per provider, the real
/// key injected, TLS to the provider, responses streamed back as they arrive.
#[derive(Parser, Debug)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// The YAML config file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    run: RunArgs,
}

/// How to run a plan, wherever it came from (a file or the AWF environment).
#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Validate the config, print the resolved plan (secrets redacted) and exit.
    #[arg(long)]
    check: bool,
    /// Log line format.
    #[arg(long, value_enum, default_value = "json")]
    log_format: LogFormat,
    /// Log level (error, warn, info, debug, trace) or a tracing filter directive.
    #[arg(long, default_value = "info")]
    log_level: String,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Exit 0 iff URL (default the admin /ready) answers 200; for container healthchecks.
    Health {
        /// The URL to probe (plain http).
        #[arg(default_value = llm_keyproxy::awf::probe::DEFAULT_URL)]
        url: String,
    },
    /// Print the YAML config rendered from the AWF environment (keys only as env: references).
    RenderConfig,
    /// Render the AWF config in memory and serve it: the AWF image's entrypoint.
    Awf {
        #[command(flatten)]
        run: RunArgs,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.command {
        Some(Command::Health { url }) => health(&url),
        Some(Command::RenderConfig) => render_config(),
        Some(Command::Awf { run }) => awf(run),
        None => serve(cli.serve),
    }
}

fn health(url: &str) -> ExitCode {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        eprintln!("llm-keyproxy health: cannot start the runtime");
        return ExitCode::from(1);
    };
    match rt.block_on(llm_keyproxy::awf::probe::probe(
        url,
        llm_keyproxy::awf::probe::DEFAULT_TIMEOUT,
    )) {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("llm-keyproxy health: {why}");
            ExitCode::from(1)
        }
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let Some(config) = args.config else {
        eprintln!("llm-keyproxy: --config FILE is required (see --help)");
        return ExitCode::from(EXIT_CONFIG);
    };
    let env = |name: &str| std::env::var(name).ok();
    let plan = match Plan::load(&config, &env) {
        Ok(plan) => plan,
        Err(errors) => {
            eprint!("llm-keyproxy: {} {errors}", config.display());
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    serve_plan(plan, args.run)
}

/// Prints the config rendered from the AWF environment; warnings go to stderr.
fn render_config() -> ExitCode {
    match render_awf("llm-keyproxy render-config") {
        Some(yaml) => {
            print!("{yaml}");
            ExitCode::SUCCESS
        }
        None => ExitCode::from(EXIT_CONFIG),
    }
}

/// Serves the config rendered from the AWF environment, with no file in between.
fn awf(args: RunArgs) -> ExitCode {
    let Some(yaml) = render_awf("llm-keyproxy awf") else {
        return ExitCode::from(EXIT_CONFIG);
    };
    let env = |name: &str| std::env::var(name).ok();
    match Plan::from_yaml(&yaml, &env) {
        Ok(plan) => serve_plan(plan, args),
        Err(errors) => {
            eprint!("llm-keyproxy awf: the config rendered from the AWF environment has {errors}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

/// The rendered YAML, with warnings and errors written to stderr under `who`.
fn render_awf(who: &str) -> Option<String> {
    let env = |name: &str| std::env::var(name).ok();
    match llm_keyproxy::awf::render::render_config(&env) {
        Ok(rendered) => {
            for w in &rendered.warnings {
                eprintln!("{who}: warning: {w}");
            }
            Some(rendered.yaml)
        }
        Err(e) => {
            eprintln!("{who}: {e}");
            None
        }
    }
}

fn serve_plan(plan: Plan, args: RunArgs) -> ExitCode {
    if args.check {
        print!("{}", plan.describe());
        println!("config OK");
        return ExitCode::SUCCESS;
    }
    let sink = match llm_keyproxy::telemetry::logsink::LogSink::start(std::io::stdout()) {
        Ok(sink) => sink,
        Err(e) => {
            eprintln!("llm-keyproxy: cannot start the log writer thread: {e}");
            return ExitCode::from(1);
        }
    };
    if let Err(e) = logging::init(args.log_format, &args.log_level, sink.writer()) {
        eprintln!("llm-keyproxy: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    let code = run_runtime(plan);
    // Every line logged so far reaches stdout before the process exits.
    sink.close();
    code
}

fn run_runtime(plan: Plan) -> ExitCode {
    // This thread's runtime runs the admin listener, signals, key reload and the drain; the
    // provider listeners run on the workers (`workers.rs`), one runtime per thread.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("llm-keyproxy: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async move {
        let bound = match Bound::bind(&plan).await {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(event = "startup_failed", error = %e);
                eprintln!("llm-keyproxy: {e}");
                return ExitCode::from(1);
            }
        };
        let shared = Arc::new(Shared::default());
        reload_on_sighup(shared.reload.clone());
        match run(plan, bound, shutdown_signal(), shared).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(event = "startup_failed", error = %e);
                eprintln!("llm-keyproxy: {e}");
                ExitCode::from(1)
            }
        }
    })
}

/// SIGHUP asks for a key reload (see `reload.rs`).
fn reload_on_sighup(trigger: Arc<tokio::sync::Notify>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut hup) = signal(SignalKind::hangup()) {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    trigger.notify_one();
                }
            });
        }
    }
    #[cfg(not(unix))]
    let _ = trigger;
}

/// Resolves on SIGTERM or SIGINT (handled explicitly, so the proxy behaves as PID 1).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
