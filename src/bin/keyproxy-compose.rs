//! `keyproxy-compose`: prints the docker-compose fragment that runs llm-keyproxy as AWF's
//! `api-proxy` service (docs/design.md §8). Thin: arguments -> `compose::render` -> stdout.
//! Exit codes: 0 printed, 64 bad arguments or a refusal (nothing printed on stdout).
#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use std::net::Ipv4Addr;
use std::process::ExitCode;

use clap::Parser;
use llm_keyproxy::awf::compose::{self, Image, Options, Refusal, Subnet};

const EXIT_USAGE: u8 = 64;

/// Prints the docker-compose fragment for llm-keyproxy as AWF's `api-proxy` service and the
/// agent's additions, for the providers whose key variables are set in this environment
/// (OPENAI_API_KEY, ANTHROPIC_API_KEY, COPILOT_GITHUB_TOKEN, GEMINI_API_KEY, GOOGLE_API_KEY).
/// Keys are passed by name only: the fragment never holds a value.
#[derive(Parser, Debug)]
#[command(name = "keyproxy-compose", version)]
struct Args {
    /// The image to run [default: llm-keyproxy:<this version>, built locally from
    /// containers/api-proxy/Dockerfile].
    #[arg(long, value_name = "REF", conflicts_with_all = ["registry", "build_context"])]
    image: Option<String>,
    /// AWF's layout: the image is REGISTRY/api-proxy:TAG.
    #[arg(long, value_name = "REGISTRY", conflicts_with = "build_context")]
    registry: Option<String>,
    /// The tag with --registry [default: this version].
    #[arg(long, value_name = "TAG", requires = "registry")]
    tag: Option<String>,
    /// Build the image locally instead: the repository root (relative paths are taken from
    /// the first compose file's directory).
    #[arg(long, value_name = "PATH")]
    build_context: Option<String>,
    /// The Dockerfile inside the build context.
    #[arg(long, value_name = "PATH", default_value = compose::DOCKERFILE, requires = "build_context")]
    dockerfile: String,
    /// The network the proxy joins (defined elsewhere, or here with --subnet).
    #[arg(long, value_name = "NAME", default_value = compose::DEFAULT_NETWORK)]
    network: String,
    /// Also declare the network, with this IPAM subnet (e.g. 172.30.0.0/24).
    #[arg(long, value_name = "CIDR")]
    subnet: Option<Subnet>,
    /// The proxy's fixed address on that network.
    #[arg(long, value_name = "IP", default_value_t = compose::DEFAULT_PROXY_IP)]
    proxy_ip: Ipv4Addr,
    /// Squid's address: the proxy's only way out (HTTPS_PROXY).
    #[arg(long, value_name = "IP", default_value_t = compose::DEFAULT_SQUID_IP)]
    squid_ip: Ipv4Addr,
    /// Squid's port.
    #[arg(long, value_name = "PORT", default_value_t = compose::DEFAULT_SQUID_PORT)]
    squid_port: u16,
    /// How long in-flight requests may drain after SIGTERM; stop_grace_period is this + 2 s.
    #[arg(long, value_name = "MS", default_value_t = compose::DEFAULT_SHUTDOWN_TIMEOUT_MS)]
    shutdown_timeout_ms: u64,
    /// The agent's service name.
    #[arg(long, value_name = "NAME", default_value = compose::DEFAULT_AGENT_SERVICE)]
    agent_service: String,
    /// Another variable to pass to the proxy BY NAME (repeatable), e.g. OPENAI_API_TARGET.
    /// `NAME=VALUE` is refused.
    #[arg(long = "env", value_name = "NAME")]
    pass_env: Vec<String>,
    /// Also give Codex its base URL (Codex releases since April 2026 read no OPENAI_BASE_URL): `openai_base_url`
    /// in a compose config mounted at /etc/codex/config.toml in the agent. Needs Docker
    /// Compose v2.23.1 or newer (inline `configs.content`; docker-compose 1.x refuses it).
    #[arg(long)]
    codex_config: bool,
    /// Never supported: keys are not written into the fragment. Refused with exit 64.
    #[arg(long)]
    inline_keys: bool,
}

/// The variables whose values must never be printed: the keys, and whatever `--env` names.
fn secret_names(args: &[String]) -> Vec<String> {
    let mut names: Vec<String> = compose::ROUTES
        .iter()
        .map(|r| r.key_var.to_owned())
        .collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let value = match a.strip_prefix("--env") {
            Some("") => it.next().cloned(),
            Some(rest) => rest.strip_prefix('=').map(str::to_owned),
            None => None,
        };
        if let Some(v) = value {
            names.push(v.split('=').next().unwrap_or_default().to_owned());
        }
    }
    names
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    let env = |name: &str| std::env::var(name).ok();
    let secrets = secret_names(&argv);
    let names = || secrets.iter().map(String::as_str);
    let refuse = |refusal: &Refusal| {
        let text = compose::redact(&refusal.to_string(), names(), &env);
        for line in text.lines() {
            eprintln!("keyproxy-compose: {line}");
        }
        ExitCode::from(EXIT_USAGE)
    };

    let args = match Args::try_parse_from(&argv) {
        Ok(a) => a,
        Err(e) => {
            // The parser may echo an argument: redact key values it could contain.
            let text = compose::redact(&e.render().to_string(), names(), &env);
            return if e.use_stderr() {
                eprint!("{text}");
                ExitCode::from(EXIT_USAGE)
            } else {
                print!("{text}");
                ExitCode::SUCCESS
            };
        }
    };
    if args.inline_keys {
        return refuse(&compose::refuse_inline("--inline-keys"));
    }
    let image = match (args.image, args.registry, args.build_context) {
        (Some(r), _, _) => Image::Pull(r),
        (None, Some(registry), _) => Image::Pull(format!(
            "{}/{}:{}",
            registry.trim_end_matches('/'),
            compose::IMAGE_NAME,
            args.tag
                .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_owned())
        )),
        (None, None, Some(context)) => Image::Build {
            context,
            dockerfile: args.dockerfile,
        },
        (None, None, None) => Image::Pull(compose::default_image()),
    };
    let opts = Options {
        image,
        network: args.network,
        proxy_ip: args.proxy_ip,
        squid_ip: args.squid_ip,
        squid_port: args.squid_port,
        subnet: args.subnet,
        shutdown_timeout_ms: args.shutdown_timeout_ms,
        agent_service: args.agent_service,
        pass_env: args.pass_env,
        codex_config: args.codex_config,
    };
    match compose::render(&opts, &env) {
        Ok(yaml) => {
            if let Some(name) = compose::leaked_var(&yaml, names(), &env) {
                return refuse(&compose::refuse_inline(&format!(
                    "the value of {name} appears in the options"
                )));
            }
            print!("{yaml}");
            ExitCode::SUCCESS
        }
        Err(refusal) => refuse(&refusal),
    }
}
