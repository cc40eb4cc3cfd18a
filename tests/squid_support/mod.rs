//! A real Squid forward proxy for the egress tests: started per test on 127.0.0.1:<free port>
//! in the foreground (`-N`) with a minimal config written into its own temp dir, and stopped
//! (SIGKILL) when dropped. Plus a few hand-made CONNECT proxies: one that hangs, one that
//! records the request head and then tunnels (or refuses).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The message printed when a test cannot run for lack of Squid.
pub const SKIP: &str = "skipped: squid not installed (apt-get install squid)";

/// The squid binary: `$KEYPROXY_SQUID` when set (None if it is not a file), else `squid` on
/// PATH or in the usual sbin dirs.
pub fn squid_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("KEYPROXY_SQUID") {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join("squid"))
        .find(|p| p.is_file())
}

/// The squid binary, or None after printing the skip message. With
/// `KEYPROXY_REQUIRE_SQUID=1` a missing squid fails the test instead.
pub fn squid_or_skip() -> Option<PathBuf> {
    match squid_binary() {
        Some(p) => Some(p),
        None if std::env::var("KEYPROXY_REQUIRE_SQUID").as_deref() == Ok("1") => {
            panic!("squid not installed and KEYPROXY_REQUIRE_SQUID=1 (apt-get install squid)")
        }
        None => {
            println!("{SKIP}");
            crate::common::note_skipped(SKIP);
            None
        }
    }
}

/// How the test's Squid treats CONNECT to the mock's port.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// `http_access allow` CONNECT from localhost to the mock's port only.
    Allow,
    /// `http_access deny` CONNECT to the mock's port (Squid answers 403).
    DenyMockPort,
}

/// A running Squid.
pub struct Squid {
    bin: PathBuf,
    pub dir: PathBuf,
    pub port: u16,
    mock_port: u16,
    policy: Policy,
    child: Option<Child>,
}

fn unique_dir() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "kp-squid-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // Squid started as root drops to its cache_effective_user (Debian: `proxy`), which must be
    // able to write its logs and pid file here.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    dir
}

/// A port nothing listens on right now (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Squid {
    /// Starts Squid on a free port, allowing (or denying) CONNECT to `mock_port`.
    /// Synchronous (it blocks for the few tens of ms Squid takes to start) so that it can run
    /// inside `Harness::start_with`'s config closure, once the mock's port is known.
    pub fn start(bin: &Path, mock_port: u16, policy: Policy) -> Squid {
        // A free port can be taken between probing and Squid's bind: try a few.
        let mut last = String::new();
        for _ in 0..5 {
            let mut squid = Squid {
                bin: bin.to_owned(),
                dir: unique_dir(),
                port: free_port(),
                mock_port,
                policy,
                child: None,
            };
            match squid.spawn() {
                Ok(()) => return squid,
                Err(e) => last = e,
            }
        }
        panic!("squid did not start: {last}");
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn config(&self) -> String {
        let d = self.dir.display();
        let deny = match self.policy {
            Policy::Allow => "",
            Policy::DenyMockPort => "http_access deny CONNECT mock_port\n",
        };
        format!(
            "# minimal forward proxy for llm-keyproxy's egress tests
http_port 127.0.0.1:{port}
pid_filename {d}/squid.pid
access_log stdio:{d}/access.log squid
cache_log {d}/cache.log
cache_store_log none
netdb_filename none
pinger_enable off
coredump_dir {d}
cache deny all
cache_mem 1 MB
shutdown_lifetime 0 seconds
acl CONNECT method CONNECT
acl mock_port port {mock}
acl from_local src 127.0.0.1/32
http_access allow from_local manager
{deny}http_access deny CONNECT !mock_port
http_access allow from_local
http_access deny all
",
            port = self.port,
            mock = self.mock_port,
        )
    }

    /// Writes the config, starts `squid -N` and waits until its port accepts connections.
    fn spawn(&mut self) -> Result<(), String> {
        let conf = self.dir.join("squid.conf");
        std::fs::write(&conf, self.config()).unwrap();
        let out = std::fs::File::create(self.dir.join("stderr.log")).unwrap();
        let child = Command::new(&self.bin)
            .arg("-N") // foreground, no daemon/kid processes: one pid to kill
            .arg("-f")
            .arg(&conf)
            .arg("-d")
            .arg("1")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.bin.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return Err(format!(
                    "squid exited with {status} before listening on {}:\n{}",
                    self.port,
                    self.diagnostics()
                ));
            }
            if std::net::TcpStream::connect_timeout(&self.addr(), Duration::from_millis(200))
                .is_ok()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(format!(
                    "squid not listening on {} after 10 s:\n{}",
                    self.port,
                    self.diagnostics()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Squid's stderr and cache.log, for failure messages.
    pub fn diagnostics(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.dir.join(f)).unwrap_or_default();
        format!(
            "--- stderr\n{}\n--- cache.log\n{}",
            read("stderr.log"),
            read("cache.log")
        )
    }

    /// Sends `SIG<name>` (e.g. `STOP`, `CONT`) to Squid.
    pub fn signal(&self, name: &str) {
        let pid = self.child.as_ref().expect("squid running").id();
        let ok = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(pid.to_string())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{name} {pid} failed");
    }

    /// Stops Squid hard (SIGKILL): its sockets close at once, nothing more is logged.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops Squid gracefully (SIGTERM) and waits for it to exit (about 3 s with
    /// `shutdown_lifetime 0`): Squid then writes the access.log lines of still-open tunnels.
    pub fn stop_gracefully(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("squid did not stop within 15 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Squid's own view of what it is serving right now: the cache manager's
    /// `active_requests`, one block per client connection.
    pub fn active_requests(&self) -> Vec<String> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(self.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(
            s,
            "GET /squid-internal-mgr/active_requests HTTP/1.0\r\nHost: 127.0.0.1:{}\r\n\r\n",
            self.port
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        assert!(text.starts_with("HTTP/1.1 200"), "cache manager: {text}");
        text.split("Connection: ")
            .skip(1)
            .map(str::to_owned)
            .collect()
    }

    /// Open CONNECT tunnels to `target` as Squid reports them (cache manager).
    pub fn active_tunnels_to(&self, target: &str) -> usize {
        self.active_requests()
            .iter()
            .filter(|b| b.contains("logType TCP_TUNNEL") && b.contains(&format!("uri {target}\n")))
            .count()
    }

    /// Starts a fresh Squid with the same config on the same port (after `kill`).
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.spawn() {
                Ok(()) => return,
                Err(e) if Instant::now() > deadline => panic!("squid did not restart: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("access.log")).unwrap_or_default()
    }

    /// access.log lines of CONNECT requests (Squid writes them when the tunnel closes).
    pub fn connect_lines(&self) -> Vec<String> {
        self.access_log()
            .lines()
            .filter(|l| l.contains(" CONNECT "))
            .map(str::to_owned)
            .collect()
    }

    /// Waits until access.log holds at least `n` CONNECT lines; returns them.
    pub async fn wait_connect_lines(&self, n: usize, limit: Duration) -> Vec<String> {
        let deadline = Instant::now() + limit;
        loop {
            let lines = self.connect_lines();
            if lines.len() >= n || Instant::now() > deadline {
                return lines;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Client TCP connections established to this Squid right now, read from the kernel
    /// (`/proc/net/tcp`): sockets whose remote end is 127.0.0.1:<squid port>.
    pub fn established_clients(&self) -> usize {
        established_to(self.port)
    }
}

impl Drop for Squid {
    fn drop(&mut self) {
        self.kill();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("squid files kept in {}", self.dir.display());
        }
    }
}

/// ESTABLISHED IPv4 sockets (any process) whose remote address is 127.0.0.1:`port`.
pub fn established_to(port: u16) -> usize {
    sockets_to(port, &["01"])
}

/// IPv4 sockets whose remote address is 127.0.0.1:`port`, in one of the kernel `states`
/// (hex, as in /proc/net/tcp: 01 ESTABLISHED, 08 CLOSE_WAIT, ...).
pub fn sockets_to(port: u16, states: &[&str]) -> usize {
    let text = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let want = format!("0100007F:{port:04X}");
    text.lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[2] == want && states.contains(&f[3])
        })
        .count()
}

/// Waits until no client socket to 127.0.0.1:`port` is open or half-closed (ESTABLISHED or
/// CLOSE_WAIT): the proxy has seen its tunnels close and dropped them. False on timeout.
pub fn wait_tunnels_dropped(port: u16, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while sockets_to(port, &["01", "08"]) > 0 {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

/// A CONNECT proxy that accepts and never answers.
pub struct HangingProxy {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl HangingProxy {
    pub async fn start() -> HangingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s); // keep it open, say nothing
            }
        });
        HangingProxy { addr, task }
    }
}

impl Drop for HangingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A tiny CONNECT proxy that records each request head, then answers `status` and (for 200)
/// tunnels to the requested target.
pub struct RecordingProxy {
    pub addr: SocketAddr,
    pub heads: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl RecordingProxy {
    pub async fn start(status: u16) -> RecordingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let seen = heads.clone();
        let task = tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                tokio::spawn(serve_connect(s, status, seen.clone()));
            }
        });
        RecordingProxy { addr, heads, task }
    }

    pub fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

impl Drop for RecordingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_connect(mut s: TcpStream, status: u16, heads: Arc<Mutex<Vec<String>>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    heads.lock().unwrap().push(head.clone());
    let target = head
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("CONNECT "))
        .and_then(|l| l.split(' ').next())
        .unwrap_or_default()
        .to_owned();
    if status != 200 {
        let reason = if status == 407 {
            "Proxy Authentication Required"
        } else {
            "Refused"
        };
        let _ = s
            .write_all(
                format!("HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\n\r\n").as_bytes(),
            )
            .await;
        return;
    }
    let Ok(mut up) = TcpStream::connect(&target).await else {
        let _ = s.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
        return;
    };
    let _ = s
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await;
    let _ = tokio::io::copy_bidirectional(&mut s, &mut up).await;
}

/// A CONNECT proxy that tunnels, and on `sever` closes every open tunnel (both sockets) while it
/// keeps listening: a forward proxy dropping its connections.
pub struct SeverableProxy {
    pub addr: SocketAddr,
    tunnels: Arc<Mutex<Vec<JoinHandle<()>>>>,
    task: JoinHandle<()>,
}

impl SeverableProxy {
    pub async fn start() -> SeverableProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tunnels: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let open = tunnels.clone();
        let task = tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let seen = Arc::new(Mutex::new(Vec::new()));
                open.lock()
                    .unwrap()
                    .push(tokio::spawn(serve_connect(s, 200, seen)));
            }
        });
        SeverableProxy {
            addr,
            tunnels,
            task,
        }
    }

    /// Closes every tunnel and returns once their sockets are closed.
    pub async fn sever(&self) {
        let open: Vec<_> = self.tunnels.lock().unwrap().drain(..).collect();
        for t in open {
            t.abort();
            let _ = t.await;
        }
    }
}

impl Drop for SeverableProxy {
    fn drop(&mut self) {
        self.task.abort();
        for t in self.tunnels.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}
