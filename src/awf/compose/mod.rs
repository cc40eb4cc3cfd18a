//! The docker-compose fragment that puts llm-keyproxy in the place of AWF's `api-proxy`
//! container (docs/design.md §8), for the `keyproxy-compose` companion binary.
//!
//! Pure: options and an environment lookup in, YAML text out. The document is built from
//! serde structs and written by `serde_yaml_ng` (no string templates), so every value is
//! quoted as YAML needs.
//!
//! Keys never pass through here. The environment is only asked which key variables are set;
//! the fragment names them (`environment: [OPENAI_API_KEY]`, which compose fills from the
//! host's environment when it starts the container) and never holds a value. The agent gets
//! base URLs pointing at the proxy and AWF's placeholder keys for the SDKs that insist on one.

use std::fmt;
use std::net::Ipv4Addr;

use serde::{Serialize, Serializer};

/// The compose service name the agent depends on.
pub const SERVICE: &str = "api-proxy";
/// AWF's container name for the sidecar.
pub const CONTAINER_NAME: &str = "awf-api-proxy";
pub const DEFAULT_NETWORK: &str = "awf-net";
pub const DEFAULT_PROXY_IP: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 30);
pub const DEFAULT_SQUID_IP: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 10);
pub const DEFAULT_SQUID_PORT: u16 = 3128;
pub const DEFAULT_AGENT_SERVICE: &str = "agent";
pub const DEFAULT_SHUTDOWN_TIMEOUT_MS: u64 = crate::awf::render::DEFAULT_SHUTDOWN_TIMEOUT_MS;
/// The image name under a registry, as AWF lays it out (`<registry>/api-proxy:<tag>`).
pub const IMAGE_NAME: &str = "api-proxy";
/// The Dockerfile, relative to the build context (the repository root).
pub const DOCKERFILE: &str = "containers/api-proxy/Dockerfile";
/// Where the image keeps the binary.
pub const BINARY: &str = "/llm-keyproxy";
/// What compose adds to the proxy's drain timeout before it sends SIGKILL (AWF: 8000 ms -> 10s).
pub const GRACE_MARGIN_MS: u64 = 2000;
/// `NO_PROXY` for the sidecar: the local health probe never goes through Squid.
pub const LOCAL_NO_PROXY: &str = "localhost,127.0.0.1,::1";

/// Where `--codex-config` mounts Codex's config: its system layer, read under the user's own
/// `$CODEX_HOME/config.toml` (so nothing is written into the agent's home).
pub const CODEX_SYSTEM_CONFIG: &str = "/etc/codex/config.toml";
/// The compose config holding it.
pub const CODEX_CONFIG_NAME: &str = "awf-codex-config";

/// Healthcheck timing. AWF's values are interval 2s, timeout 3s, retries 15, start_period
/// 30s; the interval is tighter here because the proxy is ready within milliseconds and the
/// agent (`condition: service_healthy`) waits for the first passing probe.
pub const HEALTH_INTERVAL: &str = "1s";
pub const HEALTH_TIMEOUT: &str = "3s";
pub const HEALTH_RETRIES: u32 = 15;
pub const HEALTH_START_PERIOD: &str = "30s";

/// The image used when none is named: a local build tagged with this crate's version
/// (`docker build -f containers/api-proxy/Dockerfile -t llm-keyproxy:VERSION .`). Not AWF's
/// own image name: that image is the Node sidecar, which has no `/llm-keyproxy` to probe.
pub fn default_image() -> String {
    format!("llm-keyproxy:{}", env!("CARGO_PKG_VERSION"))
}

/// One provider the fragment can route: the key variable the sidecar reads (docs/design.md §7)
/// and what the agent gets when that key is present (AWF's `*-credential-env.ts`).
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// The preset name (and its AWF port).
    pub preset: &'static str,
    /// The variable holding the key on the host; passed to the sidecar by name.
    pub key_var: &'static str,
    /// Agent variables set to `http://<proxy ip>:<port>`.
    pub base_url_vars: &'static [&'static str],
    /// Agent variables set to fixed values: placeholder keys (never real) and switches.
    pub fixed: &'static [(&'static str, &'static str)],
}

/// AWF's Copilot placeholder: token-shaped for the CLI's pre-checks, obviously not real.
pub const COPILOT_PLACEHOLDER_TOKEN: &str = "ghu_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
pub const OPENAI_PLACEHOLDER_KEY: &str = "sk-placeholder-for-api-proxy";
pub const ANTHROPIC_PLACEHOLDER_KEY: &str = "sk-ant-placeholder-key-for-credential-isolation";
pub const GEMINI_PLACEHOLDER_KEY: &str = "gemini-api-key-placeholder-for-credential-isolation";
pub const GOOGLE_PLACEHOLDER_KEY: &str = "google-api-key-placeholder-for-credential-isolation";

/// In AWF port order.
pub const ROUTES: [Route; 5] = [
    Route {
        preset: "openai",
        key_var: "OPENAI_API_KEY",
        base_url_vars: &["OPENAI_BASE_URL"],
        // Codex bypasses OPENAI_BASE_URL when it finds no key at all.
        fixed: &[
            ("OPENAI_API_KEY", OPENAI_PLACEHOLDER_KEY),
            ("CODEX_API_KEY", OPENAI_PLACEHOLDER_KEY),
        ],
    },
    Route {
        preset: "anthropic",
        key_var: "ANTHROPIC_API_KEY",
        base_url_vars: &["ANTHROPIC_BASE_URL"],
        // Not ANTHROPIC_API_KEY: Claude Code would try it directly (AWF excludes it instead).
        fixed: &[("ANTHROPIC_AUTH_TOKEN", ANTHROPIC_PLACEHOLDER_KEY)],
    },
    Route {
        preset: "copilot",
        key_var: "COPILOT_GITHUB_TOKEN",
        base_url_vars: &["COPILOT_API_URL", "COPILOT_PROVIDER_BASE_URL"],
        fixed: &[
            ("COPILOT_TOKEN", COPILOT_PLACEHOLDER_TOKEN),
            ("COPILOT_GITHUB_TOKEN", COPILOT_PLACEHOLDER_TOKEN),
            ("COPILOT_OFFLINE", "true"),
        ],
    },
    Route {
        preset: "gemini",
        key_var: "GEMINI_API_KEY",
        base_url_vars: &["GOOGLE_GEMINI_BASE_URL", "GEMINI_API_BASE_URL"],
        fixed: &[("GEMINI_API_KEY", GEMINI_PLACEHOLDER_KEY)],
    },
    Route {
        preset: "vertex",
        key_var: "GOOGLE_API_KEY",
        base_url_vars: &["GOOGLE_VERTEX_BASE_URL"],
        fixed: &[("GOOGLE_API_KEY", GOOGLE_PLACEHOLDER_KEY)],
    },
];

/// Where the sidecar's image comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Image {
    /// A reference to pull (`REGISTRY/NAME:TAG`).
    Pull(String),
    /// A local build: the context directory (the repository root) and the Dockerfile in it.
    Build { context: String, dockerfile: String },
}

/// An IPv4 subnet (`--subnet 172.30.0.0/24`): when given, the fragment also declares the
/// network with this IPAM subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Subnet {
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0);
        u32::from(ip) & mask == u32::from(self.addr) & mask
    }
}

impl std::str::FromStr for Subnet {
    type Err = String;
    fn from_str(s: &str) -> Result<Subnet, String> {
        let bad = || format!("`{s}` is not an IPv4 subnet such as 172.30.0.0/24");
        let (addr, prefix) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        if !(1..=30).contains(&prefix) {
            return Err(format!("`{s}`: the prefix length must be 1 to 30"));
        }
        Ok(Subnet { addr, prefix })
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Everything the fragment depends on besides the environment.
#[derive(Debug, Clone)]
pub struct Options {
    pub image: Image,
    pub network: String,
    pub proxy_ip: Ipv4Addr,
    pub squid_ip: Ipv4Addr,
    pub squid_port: u16,
    pub subnet: Option<Subnet>,
    pub shutdown_timeout_ms: u64,
    pub agent_service: String,
    /// More variables passed to the sidecar by name (e.g. `OPENAI_API_TARGET`).
    pub pass_env: Vec<String>,
    /// Also give Codex its base URL in a config file (`codex_config`), as a compose config
    /// with inline `content` (Docker Compose v2.23.1 or newer).
    pub codex_config: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            image: Image::Pull(default_image()),
            network: DEFAULT_NETWORK.to_owned(),
            proxy_ip: DEFAULT_PROXY_IP,
            squid_ip: DEFAULT_SQUID_IP,
            squid_port: DEFAULT_SQUID_PORT,
            subnet: None,
            shutdown_timeout_ms: DEFAULT_SHUTDOWN_TIMEOUT_MS,
            agent_service: DEFAULT_AGENT_SERVICE.to_owned(),
            pass_env: Vec::new(),
            codex_config: false,
        }
    }
}

/// Why no fragment was printed. Both kinds exit 64.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Asked to write a secret value into the fragment.
    Inline(String),
    /// Options that cannot make a valid fragment; every problem listed.
    Invalid(Vec<String>),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Inline(why) => write!(f, "refused: {why}"),
            Refusal::Invalid(problems) => {
                for (i, p) in problems.iter().enumerate() {
                    if i > 0 {
                        writeln!(f)?;
                    }
                    write!(f, "{p}")?;
                }
                Ok(())
            }
        }
    }
}

/// The refusal for any request to put a key's value in the fragment.
pub fn refuse_inline(what: &str) -> Refusal {
    Refusal::Inline(format!(
        "{what}: keyproxy-compose never writes a key's value into the fragment (it would sit \
         in a file, in `docker inspect` and in the agent's reach). Keys are passed by name: \
         export the variable on the host and compose hands its value to the api-proxy \
         container only"
    ))
}

/// Compose names (services, networks): what compose accepts, and nothing YAML must escape.
fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        && s.len() <= 63
}

/// Environment variable names.
fn valid_var(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Options {
    /// Every problem with these options; a `NAME=VALUE` in `pass_env` is a refusal.
    pub fn validate(&self) -> Result<(), Refusal> {
        let mut problems = Vec::new();
        for entry in &self.pass_env {
            if let Some((name, _)) = entry.split_once('=') {
                // The value is not echoed: it may be a key.
                return Err(refuse_inline(&format!("--env {name}=...")));
            }
            if !valid_var(entry) {
                problems.push(format!(
                    "--env `{entry}`: not a variable name \
                     (letters, digits and `_`, not starting with a digit)"
                ));
            }
        }
        match &self.image {
            Image::Pull(r) if r.is_empty() || r.contains(|c: char| c.is_whitespace()) => problems
                .push(format!(
                    "--image `{}`: an image reference such as ghcr.io/OWNER/api-proxy:TAG",
                    r.escape_debug()
                )),
            Image::Build {
                context,
                dockerfile,
            } => {
                if context.is_empty() || context.contains(char::is_control) {
                    problems.push("--build-context: a directory (the repository root)".into());
                }
                if dockerfile.is_empty() || dockerfile.contains(char::is_control) {
                    problems.push(format!(
                        "--dockerfile: a path inside the build context, e.g. {DOCKERFILE}"
                    ));
                }
            }
            Image::Pull(_) => {}
        }
        if !valid_name(&self.network) {
            problems.push(format!(
                "--network `{}`: a compose network name (letters, digits, `_.-`)",
                self.network.escape_debug()
            ));
        }
        if !valid_name(&self.agent_service) {
            problems.push(format!(
                "--agent-service `{}`: a compose service name (letters, digits, `_.-`)",
                self.agent_service.escape_debug()
            ));
        } else if self.agent_service == SERVICE {
            problems.push(format!(
                "--agent-service: `{SERVICE}` is the proxy's own service"
            ));
        }
        if self.proxy_ip == self.squid_ip {
            problems.push(format!(
                "--proxy-ip and --squid-ip are both {}: the proxy and Squid are different containers",
                self.proxy_ip
            ));
        }
        if self.squid_port == 0 {
            problems.push("--squid-port: 1 to 65535".to_owned());
        }
        if let Some(subnet) = self.subnet {
            for (flag, ip) in [("--proxy-ip", self.proxy_ip), ("--squid-ip", self.squid_ip)] {
                if !subnet.contains(ip) {
                    problems.push(format!("{flag} {ip} is outside --subnet {subnet}"));
                }
            }
        }
        if self.shutdown_timeout_ms == 0 {
            problems.push(
                "--shutdown-timeout-ms: a positive number of milliseconds (AWF's default is 8000)"
                    .to_owned(),
            );
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Refusal::Invalid(problems))
        }
    }
}

/// What the sidecar reads in keyless mode (AWF's names), passed by name when set.
const OIDC_VARS: [&str; 15] = [
    "AWF_AUTH_TYPE",
    "AWF_AUTH_PROVIDER",
    "AWF_AUTH_OIDC_AUDIENCE",
    "AWF_AUTH_AZURE_TENANT_ID",
    "AWF_AUTH_AZURE_CLIENT_ID",
    "AWF_AUTH_AZURE_SCOPE",
    "AWF_AUTH_AZURE_CLOUD",
    "AWF_AUTH_AWS_ROLE_ARN",
    "AWF_AUTH_AWS_REGION",
    "AWF_AUTH_AWS_ROLE_SESSION_NAME",
    "AWF_AUTH_GCP_WORKLOAD_IDENTITY_PROVIDER",
    "AWF_AUTH_GCP_SERVICE_ACCOUNT",
    "AWF_AUTH_GCP_SCOPE",
    "ACTIONS_ID_TOKEN_REQUEST_URL",
    "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
];

/// What AWF's host gives the sidecar for OpenTelemetry, and the standard variables the proxy
/// reads itself (docs/observability.md "Traces"), passed by name when set: values such as
/// `OTEL_EXPORTER_OTLP_HEADERS` may hold a collector's key and never enter the fragment.
const OTEL_VARS: [&str; 12] = [
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_TRACES_EXPORTER",
    "GH_AW_OTLP_ENDPOINTS",
    "GITHUB_AW_OTEL_TRACE_ID",
    "GITHUB_AW_OTEL_PARENT_SPAN_ID",
];

/// `stop_grace_period` for a drain timeout: the timeout plus [`GRACE_MARGIN_MS`], rounded up
/// to whole seconds (AWF: 8000 ms -> `10s`, 15000 ms -> `17s`).
pub fn stop_grace_period(shutdown_timeout_ms: u64) -> String {
    let ms = shutdown_timeout_ms.saturating_add(GRACE_MARGIN_MS);
    format!("{}s", ms.div_ceil(1000))
}

/// The routes whose key variable is set (non-empty after trimming) in `env`.
pub fn configured(env: &dyn Fn(&str) -> Option<String>) -> Vec<&'static Route> {
    ROUTES
        .iter()
        .filter(|r| env(r.key_var).is_some_and(|v| !v.trim().is_empty()))
        .collect()
}

/// Codex's config for the agent: the built-in OpenAI provider through the proxy. Codex reads
/// no `OPENAI_BASE_URL` since April 2026 (openai/codex#16720); `openai_base_url` replaces it.
pub fn codex_config(openai_base_url: &str) -> String {
    format!(
        "# Codex through llm-keyproxy (written by keyproxy-compose)\n\
         openai_base_url = \"{}\"\n",
        openai_base_url.escape_default()
    )
}

/// The fragment's YAML, preceded by a comment line. Fails only on invalid options.
pub fn render(opts: &Options, env: &dyn Fn(&str) -> Option<String>) -> Result<String, Refusal> {
    opts.validate()?;
    let mut routes = configured(env);
    // Keyless (AWF_AUTH_TYPE=github-oidc, docs/cloud.md): the OpenAI port serves without a
    // key, and the sidecar needs the AWF_AUTH_* and GitHub OIDC variables, passed by name.
    let oidc = env("AWF_AUTH_TYPE").is_some_and(|v| v.trim().eq_ignore_ascii_case("github-oidc"));
    // Copilot BYOK on Azure: the OpenAI port serves it with COPILOT_PROVIDER_API_KEY.
    let byok = env("COPILOT_PROVIDER_TYPE").is_some_and(|v| v.trim().eq_ignore_ascii_case("azure"));
    if (oidc || byok) && !routes.iter().any(|r| r.preset == "openai") {
        routes.extend(ROUTES.iter().filter(|r| r.preset == "openai"));
        routes.sort_by_key(|r| ROUTES.iter().position(|x| std::ptr::eq(x, *r)));
    }
    if opts.codex_config && !routes.iter().any(|r| r.preset == "openai") {
        return Err(Refusal::Invalid(vec![
            "--codex-config: OPENAI_API_KEY is not set here, so the fragment routes no OpenAI \
             traffic for Codex"
                .to_owned(),
        ]));
    }
    let squid = format!("http://{}:{}", opts.squid_ip, opts.squid_port);

    let mut environment: Vec<String> = routes.iter().map(|r| r.key_var.to_owned()).collect();
    environment.extend([
        format!("HTTPS_PROXY={squid}"),
        format!("HTTP_PROXY={squid}"),
        format!("NO_PROXY={LOCAL_NO_PROXY}"),
        format!("no_proxy={LOCAL_NO_PROXY}"),
        format!(
            "AWF_API_PROXY_SHUTDOWN_TIMEOUT_MS={}",
            opts.shutdown_timeout_ms
        ),
    ]);
    let byok_vars = [
        "COPILOT_PROVIDER_TYPE",
        "COPILOT_PROVIDER_BASE_URL",
        "COPILOT_PROVIDER_API_KEY",
    ];
    let passed = OIDC_VARS
        .iter()
        .filter(|_| oidc)
        .chain(byok_vars.iter().filter(|_| byok));
    for v in passed.filter(|v| env(v).is_some_and(|x| !x.trim().is_empty())) {
        if !environment.iter().any(|e| e == v) {
            environment.push((*v).to_owned());
        }
    }
    let otel = OTEL_VARS
        .iter()
        .filter(|v| env(v).is_some_and(|x| !x.trim().is_empty()));
    environment.extend(otel.map(|v| (*v).to_owned()));
    for name in &opts.pass_env {
        if !environment.iter().any(|e| e == name) {
            environment.push(name.clone());
        }
    }

    let (image, build) = match &opts.image {
        Image::Pull(r) => (Some(r.clone()), None),
        Image::Build {
            context,
            dockerfile,
        } => (
            None,
            Some(Build {
                context: context.clone(),
                dockerfile: dockerfile.clone(),
            }),
        ),
    };
    let proxy = ProxyService {
        image,
        build,
        container_name: CONTAINER_NAME,
        networks: Map(vec![(
            opts.network.clone(),
            Attachment {
                ipv4_address: opts.proxy_ip.to_string(),
            },
        )]),
        environment,
        // `health` without a URL probes `http://127.0.0.1:9901/ready`: the admin listener as
        // `awf` binds it, on the container's loopback only (no port published, none reachable
        // from the agent on the network).
        healthcheck: Healthcheck {
            test: vec!["CMD", BINARY, "health"],
            interval: HEALTH_INTERVAL,
            timeout: HEALTH_TIMEOUT,
            retries: HEALTH_RETRIES,
            start_period: HEALTH_START_PERIOD,
        },
        cap_drop: vec!["ALL"],
        security_opt: vec!["no-new-privileges:true"],
        read_only: true,
        mem_limit: "512m",
        memswap_limit: "512m",
        pids_limit: 100,
        cpu_shares: 512,
        stop_grace_period: stop_grace_period(opts.shutdown_timeout_ms),
    };

    let agent_no_proxy = format!("{LOCAL_NO_PROXY},{},{SERVICE}", opts.proxy_ip);
    let mut agent_env = vec![
        ("AWF_API_PROXY_IP".to_owned(), opts.proxy_ip.to_string()),
        ("NO_PROXY".to_owned(), agent_no_proxy.clone()),
        ("no_proxy".to_owned(), agent_no_proxy),
    ];
    let mut codex = None;
    for route in &routes {
        let port = crate::config::presets::preset(route.preset)
            .map(|p| p.awf_port)
            .ok_or_else(|| Refusal::Invalid(vec![format!("no preset named {}", route.preset)]))?;
        let url = format!("http://{}:{port}", opts.proxy_ip);
        if route.preset == "openai" && opts.codex_config {
            codex = Some(codex_config(&format!("{url}/v1")));
        }
        agent_env.extend(
            route
                .base_url_vars
                .iter()
                .map(|v| ((*v).to_owned(), url.clone())),
        );
        agent_env.extend(
            route
                .fixed
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
    }
    let agent = AgentService {
        depends_on: Map(vec![(
            SERVICE.to_owned(),
            DependsOn {
                condition: "service_healthy",
            },
        )]),
        environment: Map(agent_env),
        configs: codex.is_some().then(|| {
            vec![ConfigMount {
                source: CODEX_CONFIG_NAME,
                target: CODEX_SYSTEM_CONFIG,
            }]
        }),
    };
    let configs =
        codex.map(|content| Map(vec![(CODEX_CONFIG_NAME.to_owned(), ConfigDef { content })]));

    let networks = opts.subnet.map(|subnet| {
        Map(vec![(
            opts.network.clone(),
            NetworkDef {
                driver: "bridge",
                ipam: Ipam {
                    config: vec![IpamConfig {
                        subnet: subnet.to_string(),
                    }],
                },
            },
        )])
    });
    let fragment = Fragment {
        services: Services {
            proxy,
            agent_name: &opts.agent_service,
            agent,
        },
        networks,
        configs,
    };
    let body = serde_yaml_ng::to_string(&fragment)
        .map_err(|e| Refusal::Invalid(vec![format!("cannot write the fragment: {e}")]))?;
    Ok(format!("{HEADER}{body}"))
}

const HEADER: &str = "# llm-keyproxy as AWF's api-proxy (written by keyproxy-compose): \
                      docker-compose -f BASE.yml -f THIS.yml up\n";

/// The name of a key variable whose (trimmed) value appears in `text`, if any: the last guard
/// before anything is printed. Values shorter than 8 characters are not searched for (they
/// would match by chance and are not keys).
pub fn leaked_var<'a>(
    text: &str,
    names: impl IntoIterator<Item = &'a str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<&'a str> {
    names.into_iter().find(|name| {
        env(name)
            .map(|v| v.trim().to_owned())
            .is_some_and(|v| v.len() >= 8 && text.contains(&v))
    })
}

/// `text` with the (trimmed) values of `names` replaced by `***` (for messages that may echo
/// an argument, such as a command-line parser's errors).
pub fn redact<'a>(
    text: &str,
    names: impl IntoIterator<Item = &'a str>,
    env: &dyn Fn(&str) -> Option<String>,
) -> String {
    let mut out = text.to_owned();
    for name in names {
        if let Some(v) = env(name).map(|v| v.trim().to_owned()) {
            if v.len() >= 8 {
                out = out.replace(&v, "***");
            }
        }
    }
    out
}

/// A map with its entries in the given order.
struct Map<T>(Vec<(String, T)>);

impl<T: Serialize> Serialize for Map<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

#[derive(Serialize)]
struct Fragment<'a> {
    services: Services<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    networks: Option<Map<NetworkDef>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    configs: Option<Map<ConfigDef>>,
}

/// A compose config with inline content (Compose v2.23.1+).
#[derive(Serialize)]
struct ConfigDef {
    content: String,
}

#[derive(Serialize)]
struct ConfigMount {
    source: &'static str,
    target: &'static str,
}

/// `api-proxy` then the agent (whose name is an option).
struct Services<'a> {
    proxy: ProxyService,
    agent_name: &'a str,
    agent: AgentService,
}

impl Serialize for Services<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(2))?;
        map.serialize_entry(SERVICE, &self.proxy)?;
        map.serialize_entry(self.agent_name, &self.agent)?;
        map.end()
    }
}

#[derive(Serialize)]
struct ProxyService {
    #[serde(skip_serializing_if = "Option::is_none")]
    image: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    build: Option<Build>,
    container_name: &'static str,
    networks: Map<Attachment>,
    /// List form: a bare `NAME` passes the host's value through; never `NAME=value` for a key.
    environment: Vec<String>,
    healthcheck: Healthcheck,
    cap_drop: Vec<&'static str>,
    security_opt: Vec<&'static str>,
    read_only: bool,
    mem_limit: &'static str,
    memswap_limit: &'static str,
    pids_limit: u32,
    cpu_shares: u32,
    stop_grace_period: String,
}

#[derive(Serialize)]
struct Build {
    context: String,
    dockerfile: String,
}

#[derive(Serialize)]
struct Attachment {
    ipv4_address: String,
}

#[derive(Serialize)]
struct Healthcheck {
    test: Vec<&'static str>,
    interval: &'static str,
    timeout: &'static str,
    retries: u32,
    start_period: &'static str,
}

#[derive(Serialize)]
struct AgentService {
    depends_on: Map<DependsOn>,
    environment: Map<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    configs: Option<Vec<ConfigMount>>,
}

#[derive(Serialize)]
struct DependsOn {
    condition: &'static str,
}

#[derive(Serialize)]
struct NetworkDef {
    driver: &'static str,
    ipam: Ipam,
}

#[derive(Serialize)]
struct Ipam {
    config: Vec<IpamConfig>,
}

#[derive(Serialize)]
struct IpamConfig {
    subnet: String,
}

#[cfg(test)]
mod tests;
