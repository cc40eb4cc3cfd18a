//! Provider presets as data: default upstream, credential header, AWF port and extras.

/// Request rewrites a preset adds on top of the common header rules.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Extras {
    /// Add `anthropic-version: 2023-06-01` when the client sent none.
    pub anthropic_version: bool,
    /// Add `x-initiator: agent` when the client sent none (GitHub Copilot; only when the
    /// upstream is `githubcopilot.com` or one of its subdomains, see `is_copilot_host`).
    pub copilot_initiator: bool,
    /// Remove the `key`, `apiKey` and `api_key` query parameters (Gemini).
    pub strip_key_params: bool,
    /// OpenAI-style chat: a streamed request without `stream_options` gets
    /// `include_usage: true` while token usage is read (`proxy::stream_usage`).
    pub stream_usage: bool,
}

/// A built-in provider.
#[derive(Clone, Copy, Debug)]
pub struct Preset {
    pub name: &'static str,
    /// The port AWF gives this provider (the default listen port); 0: none, `listen:` required.
    pub awf_port: u16,
    pub upstream: &'static str,
    pub auth_header: &'static str,
    pub auth_prefix: &'static str,
    pub extras: Extras,
}

pub const ANTHROPIC_VERSION: &str = "2023-06-01";

const NONE: Extras = Extras {
    anthropic_version: false,
    copilot_initiator: false,
    strip_key_params: false,
    stream_usage: false,
};

pub const PRESETS: &[Preset] = &[
    Preset {
        name: "openai",
        awf_port: 10000,
        upstream: "https://api.openai.com/v1",
        auth_header: "authorization",
        auth_prefix: "Bearer ",
        extras: Extras {
            stream_usage: true,
            ..NONE
        },
    },
    Preset {
        name: "anthropic",
        awf_port: 10001,
        upstream: "https://api.anthropic.com",
        auth_header: "x-api-key",
        auth_prefix: "",
        extras: Extras {
            anthropic_version: true,
            ..NONE
        },
    },
    Preset {
        name: "copilot",
        awf_port: 10002,
        upstream: "https://api.githubcopilot.com",
        auth_header: "authorization",
        auth_prefix: "Bearer ",
        extras: Extras {
            copilot_initiator: true,
            stream_usage: true,
            ..NONE
        },
    },
    Preset {
        name: "gemini",
        awf_port: 10003,
        upstream: "https://generativelanguage.googleapis.com",
        auth_header: "x-goog-api-key",
        auth_prefix: "",
        extras: Extras {
            strip_key_params: true,
            ..NONE
        },
    },
    Preset {
        name: "vertex",
        awf_port: 10004,
        upstream: "https://aiplatform.googleapis.com",
        auth_header: "x-goog-api-key",
        auth_prefix: "",
        extras: NONE,
    },
    // Keyless clouds (docs/cloud.md): the credential comes from `aws:`; `upstream` is the
    // template that `region:` fills in.
    Preset {
        name: "bedrock",
        awf_port: 0,
        upstream: "https://bedrock-runtime.{region}.amazonaws.com",
        auth_header: "authorization",
        auth_prefix: "",
        extras: NONE,
    },
    Preset {
        name: "azure-openai",
        awf_port: 0,
        upstream: "",
        auth_header: "api-key",
        auth_prefix: "",
        // Azure OpenAI streams chat completions as OpenAI does: usage only when asked.
        extras: Extras {
            stream_usage: true,
            ..NONE
        },
    },
];

/// `githubcopilot.com` or a subdomain of it: the hosts the Node sidecar sent Copilot's
/// `X-Initiator` to (its `isCopilotHost`); a `COPILOT_API_TARGET` elsewhere gets none.
pub fn is_copilot_host(host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    host == "githubcopilot.com" || host.ends_with(".githubcopilot.com")
}

/// The preset of that name, if it is one.
pub fn preset(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name)
}
