//! `mock-upstream` binary: serves the TLS mock of the LLM APIs and cloud token services on a fixed
//! address and writes its CA certificate to a file, until Ctrl-C or SIGTERM.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use mock_upstream::{Alpn, MockConfig, MockUpstream};

const USAGE: &str = "usage: mock-upstream [--listen ADDR] [--ca-out PATH] [--key KEY] [--gap-ms MS] [--alpn both|h1|h2] [--h2-max-streams N] [--oidc-request-token T] [--aws-access-key-id AKID] [--sa-out PATH]
  --listen ADDR   address to listen on (default 127.0.0.1:8443)
  --ca-out PATH   where to write the CA certificate, PEM (default target/mock-ca.pem)
  --key KEY       only accept this credential (default: any non-empty one)
  --gap-ms MS     gap between generated SSE chunks (default 20)
  --alpn PROTOS   ALPN protocols to advertise (default both)
  --h2-max-streams N  SETTINGS_MAX_CONCURRENT_STREAMS advertised on h2 connections (default 100000)
  --oidc-request-token T  bearer token GET /oidc/token requires (default: any non-empty one)
  --aws-access-key-id AKID  static AWS key id Bedrock accepts besides STS-issued ones
                  (default: any key id of AWS's shape)
  --sa-out PATH   write a Google service-account JSON key (token_uri https://127.0.0.1:PORT/google/token)";

struct Args {
    listen: SocketAddr,
    ca_out: PathBuf,
    sa_out: Option<PathBuf>,
    cfg: MockConfig,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut out = Args {
        listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
        ca_out: PathBuf::from("target/mock-ca.pem"),
        sa_out: None,
        cfg: MockConfig::default(),
    };
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            return Err(String::new());
        }
        if ![
            "--listen",
            "--ca-out",
            "--key",
            "--gap-ms",
            "--alpn",
            "--h2-max-streams",
            "--oidc-request-token",
            "--aws-access-key-id",
            "--sa-out",
        ]
        .contains(&flag.as_str())
        {
            return Err(format!("unknown flag: {flag}"));
        }
        let value = args
            .next()
            .ok_or_else(|| format!("missing value for {flag}"))?;
        match flag.as_str() {
            "--listen" => {
                out.listen = value
                    .parse()
                    .map_err(|_| format!("invalid --listen address: {value}"))?
            }
            "--ca-out" => out.ca_out = PathBuf::from(value),
            "--sa-out" => out.sa_out = Some(PathBuf::from(value)),
            "--oidc-request-token" => out.cfg.oidc_request_token = Some(value),
            "--aws-access-key-id" => out.cfg.aws_access_key_id = Some(value),
            // The key's value is never echoed back, not even in errors.
            "--key" => out.cfg.expected_key = Some(value),
            "--gap-ms" => {
                let ms = value
                    .parse()
                    .map_err(|_| format!("invalid --gap-ms: {value}"))?;
                out.cfg.sse_gap = Duration::from_millis(ms);
            }
            "--h2-max-streams" => {
                out.cfg.h2_max_concurrent_streams = value
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("invalid --h2-max-streams: {value}"))?;
            }
            "--alpn" => {
                out.cfg.alpn = match value.as_str() {
                    "both" => Alpn::Both,
                    "h1" | "http/1.1" => Alpn::Http1Only,
                    "h2" => Alpn::Http2Only,
                    _ => return Err(format!("invalid --alpn: {value}")),
                }
            }
            _ => unreachable!("flag checked above"),
        }
    }
    Ok(out)
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
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

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(msg) => {
            if !msg.is_empty() {
                eprintln!("mock-upstream: {msg}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let mock = match MockUpstream::start_on(args.listen, args.cfg).await {
        Ok(mock) => mock,
        Err(e) => {
            eprintln!("mock-upstream: cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    if let Some(dir) = args.ca_out.parent().filter(|d| !d.as_os_str().is_empty()) {
        if let Err(e) = std::fs::create_dir_all(dir) {
            eprintln!("mock-upstream: cannot create {}: {e}", dir.display());
            return ExitCode::FAILURE;
        }
    }
    if let Err(e) = std::fs::write(&args.ca_out, mock.ca_pem()) {
        eprintln!("mock-upstream: cannot write {}: {e}", args.ca_out.display());
        return ExitCode::FAILURE;
    }
    if let Some(path) = &args.sa_out {
        let token_uri = format!("https://{}/google/token", mock.addr());
        if let Err(e) = std::fs::write(path, mock_upstream::google_service_account_json(&token_uri))
        {
            eprintln!("mock-upstream: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    println!(
        "mock-upstream listening on https://{} (CA written to {})",
        mock.addr(),
        args.ca_out.display()
    );
    shutdown_signal().await;
    drop(mock);
    ExitCode::SUCCESS
}
