//! A cluster of real daemon processes on this machine, for tests, benches and examples:
//! a head and nodes started from the `prism` binary, each node on its own loopback
//! address, in a session directory of their own, ended by PID when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::cluster::session;
use crate::cluster::wire::{self, Msg, NodeView, Role};

/// A head and nodes running as child processes.
pub struct LocalCluster {
    /// The session directory of the cluster's daemons.
    pub dir: PathBuf,
    /// The head's address.
    pub head: String,
    /// The cluster token.
    pub token: String,
    bin: PathBuf,
    daemons: Vec<Child>,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// The `prism` binary next to the running executable (`target/<profile>/prism` for a
/// test in `deps/` or an example in `examples/`).
pub fn sibling_prism_bin() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let mut dir = exe.parent()?;
    for _ in 0..2 {
        let candidate = dir.join("prism");
        if candidate.is_file() {
            return Some(candidate);
        }
        dir = dir.parent()?;
    }
    None
}

impl LocalCluster {
    /// A head without resources and one node per `(ip, cpus)`.
    ///
    /// In a worker process started by one of these nodes (the test binary re-run with
    /// this test's name) this never returns: the process serves tasks instead.
    pub fn start(bin: impl Into<PathBuf>, nodes: &[(&str, f64)]) -> LocalCluster {
        crate::cluster::enter_if_worker();
        let dir = std::env::temp_dir().join(format!(
            "prism-test-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut c = LocalCluster {
            dir: dir.clone(),
            head: String::new(),
            token: String::new(),
            bin: bin.into(),
            daemons: Vec::new(),
        };
        let head = c.spawn(&[
            "start",
            "--head",
            "--block",
            "--port",
            "0",
            "--num-cpus",
            "0",
            "--dashboard-port",
            "0",
        ]);
        c.daemons.push(head);
        c.head = wait_for(
            || {
                let a = std::fs::read_to_string(dir.join("address")).ok()?;
                (!a.trim().is_empty()).then(|| a.trim().to_string())
            },
            "the head's address",
        );
        c.token = std::fs::read_to_string(dir.join("token")).unwrap();
        for (ip, cpus) in nodes {
            c.add_node(ip, *cpus, None);
        }
        c.wait_nodes(nodes.len());
        c
    }

    fn spawn(&self, args: &[&str]) -> Child {
        Command::new(&self.bin)
            .args(args)
            .env("PRISM_SESSION_DIR", &self.dir)
            .env_remove("PRISM_ADDRESS")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(self.dir.join(format!("daemon-{}.log", self.daemons.len())))
                    .unwrap(),
            )
            .spawn()
            .expect("the prism binary starts")
    }

    /// Starts one more node; returns its index in the daemon list.
    pub fn add_node(&mut self, ip: &str, cpus: f64, resources: Option<&str>) -> usize {
        let cpus = cpus.to_string();
        let mut args = vec![
            "start",
            "--block",
            "--address",
            &self.head,
            "--num-cpus",
            &cpus,
            "--node-ip-address",
            ip,
        ];
        if let Some(r) = resources {
            args.extend(["--resources", r]);
        }
        let child = self.spawn(&args);
        self.daemons.push(child);
        self.daemons.len() - 1
    }

    /// Kills the head outright (SIGKILL) and starts it again on the same port and
    /// session: it takes back its tables and token, and the nodes reconnect.
    pub fn restart_head(&mut self, nodes: usize) {
        session::signal(self.daemons[0].id(), 9);
        let _ = self.daemons[0].wait();
        let _ = std::fs::remove_file(self.dir.join("address"));
        let port = self.head.rsplit(':').next().unwrap_or("0").to_string();
        self.daemons[0] = self.spawn(&[
            "start",
            "--head",
            "--block",
            "--port",
            &port,
            "--num-cpus",
            "0",
            "--dashboard-port",
            "0",
        ]);
        let dir = self.dir.clone();
        wait_for(
            || std::fs::read_to_string(dir.join("address")).ok(),
            "the restarted head",
        );
        self.wait_nodes(nodes);
    }

    /// The PID of a daemon (0 is the head).
    pub fn daemon_pid(&self, index: usize) -> u32 {
        self.daemons[index].id()
    }

    /// The head's view of the nodes.
    pub fn nodes(&self) -> Vec<NodeView> {
        let io = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        io.block_on(async {
            let (mut s, _) = wire::connect(&self.head, &self.token, Role::Cli)
                .await
                .ok()?;
            wire::write_msg(&mut s, &Msg::Status).await.ok()?;
            match wire::read_msg(&mut s).await.ok()? {
                Msg::ClusterView { nodes } => Some(nodes),
                _ => None,
            }
        })
        .unwrap_or_default()
    }

    /// Waits until `n` nodes are alive.
    pub fn wait_nodes(&self, n: usize) {
        wait_for(
            || (self.nodes().iter().filter(|v| v.alive).count() >= n).then_some(()),
            "the nodes to join",
        );
    }

    /// The last lines of every log of the cluster: the daemons' and their workers'.
    fn logs(&self) -> String {
        let mut files: Vec<PathBuf> = (0..self.daemons.len())
            .map(|i| self.dir.join(format!("daemon-{i}.log")))
            .collect();
        if let Ok(entries) = std::fs::read_dir(self.dir.join("logs")) {
            let mut workers: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            workers.sort();
            files.extend(workers);
        }
        let mut logs = String::new();
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            let start = (text.len().saturating_sub(4000)..text.len())
                .find(|i| text.is_char_boundary(*i))
                .unwrap_or(text.len());
            let name = file.file_name().unwrap_or_default().to_string_lossy();
            logs.push_str(&format!("--- {name} (last lines):\n{}\n", &text[start..]));
        }
        logs
    }

    /// Starts the driver runtime in this process, connected to the cluster.
    pub fn connect(&self) -> crate::Result<()> {
        crate::init_with(
            crate::Config::default()
                .address(&self.head)
                .token(&self.token),
        )
    }
}

/// Polls `f` every 10 ms until it returns a value; panics after 30 s (a
/// [`LocalCluster`] dropped by the panic prints what its daemons and workers logged).
pub fn wait_for<T>(mut f: impl FnMut() -> Option<T>, what: &str) -> T {
    let t = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Ends a child process: SIGTERM, then SIGKILL after 5 s.
pub fn end_process(child: &mut Child) {
    session::signal(child.id(), 15);
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(5) {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The test failed: what the cluster logged goes with the failure, before
            // the session directory goes.
            eprintln!("the cluster logged:\n{}", self.logs());
        }
        crate::shutdown();
        for c in self.daemons.iter_mut().rev() {
            end_process(c);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
