//! A cluster of real daemon processes on this machine: a head and nodes started from
//! the `prism` binary, each node on its own loopback address, in a session directory
//! of their own, ended by PID when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::{wait_for, HarnessError, NodeSpec};
use crate::session;
use crate::wire::{self, Msg, NodeView, Role};

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

/// The arguments of `prism start` for a node offering `spec`.
fn node_args(spec: &NodeSpec) -> Vec<String> {
    let mut args = vec![
        "--num-cpus".to_string(),
        spec.cpus.to_string(),
        "--num-gpus".to_string(),
        spec.gpus.to_string(),
    ];
    if !spec.resources.is_empty() {
        let json = serde_json::to_string(&spec.resources).unwrap_or_else(|_| "{}".into());
        args.extend(["--resources".to_string(), json]);
    }
    if let Some(cap) = spec.object_store_memory {
        args.extend(["--object-store-memory".to_string(), cap.to_string()]);
    }
    args
}

impl LocalCluster {
    /// A head without resources and one node per `(ip, cpus)`.
    ///
    /// In a worker process started by one of these nodes (the test binary re-run with
    /// this test's name) this never returns: the process serves tasks instead.
    pub fn start(
        bin: impl Into<PathBuf>,
        nodes: &[(&str, f64)],
    ) -> Result<LocalCluster, HarnessError> {
        let nodes: Vec<(&str, NodeSpec)> = nodes
            .iter()
            .map(|(ip, cpus)| (*ip, NodeSpec::cpus(*cpus)))
            .collect();
        Self::start_with(bin, &nodes)
    }

    /// A head without resources and one node per `(ip, what it offers)`.
    pub fn start_with(
        bin: impl Into<PathBuf>,
        nodes: &[(&str, NodeSpec)],
    ) -> Result<LocalCluster, HarnessError> {
        Self::start_with_head(bin, &[], nodes)
    }

    /// The same, the head started with the `prism start` options `head_options` too
    /// (such as `["--task-events", "50"]`).
    pub fn start_with_head(
        bin: impl Into<PathBuf>,
        head_options: &[&str],
        nodes: &[(&str, NodeSpec)],
    ) -> Result<LocalCluster, HarnessError> {
        crate::enter_if_worker();
        let dir = std::env::temp_dir().join(format!(
            "prism-test-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .map_err(|e| HarnessError::Start(format!("creating {}: {e}", dir.display())))?;
        let mut c = LocalCluster {
            dir: dir.clone(),
            head: String::new(),
            token: String::new(),
            bin: bin.into(),
            daemons: Vec::new(),
        };
        let mut args = vec![
            "start",
            "--head",
            "--block",
            "--port",
            "0",
            "--num-cpus",
            "0",
            "--dashboard-port",
            "0",
        ];
        args.extend_from_slice(head_options);
        let head = c.spawn(&args)?;
        c.daemons.push(head);
        c.head = wait_for(
            || {
                let a = std::fs::read_to_string(dir.join("address")).ok()?;
                (!a.trim().is_empty()).then(|| a.trim().to_string())
            },
            "the head's address",
        )?;
        c.token = std::fs::read_to_string(dir.join("token"))
            .map_err(|e| HarnessError::Start(format!("reading the cluster token: {e}")))?;
        for (ip, spec) in nodes {
            c.add_node_with(ip, spec)?;
        }
        c.wait_nodes(nodes.len())?;
        Ok(c)
    }

    fn spawn(&self, args: &[&str]) -> Result<Child, HarnessError> {
        self.spawn_in(args, &self.dir)
    }

    /// Starts a daemon whose session directory is `session`.
    fn spawn_in(&self, args: &[&str], session: &Path) -> Result<Child, HarnessError> {
        let log = self.dir.join(format!("daemon-{}.log", self.daemons.len()));
        let stderr = std::fs::File::create(&log)
            .map_err(|e| HarnessError::Start(format!("creating {}: {e}", log.display())))?;
        Command::new(&self.bin)
            .args(args)
            .env("PRISM_SESSION_DIR", session)
            .env_remove("PRISM_ADDRESS")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| HarnessError::Start(format!("running {}: {e}", self.bin.display())))
    }

    /// Starts one more node with `cpus` CPUs and the custom resources of the JSON
    /// object `resources`; returns its index in the daemon list.
    pub fn add_node(
        &mut self,
        ip: &str,
        cpus: f64,
        resources: Option<&str>,
    ) -> Result<usize, HarnessError> {
        let mut spec = NodeSpec::cpus(cpus);
        if let Some(json) = resources {
            spec.resources = serde_json::from_str(json)
                .map_err(|e| HarnessError::Start(format!("resources {json}: {e}")))?;
        }
        self.add_node_with(ip, &spec)
    }

    /// Starts one more node offering `spec`; returns its index in the daemon list.
    pub fn add_node_with(&mut self, ip: &str, spec: &NodeSpec) -> Result<usize, HarnessError> {
        let session = self.dir.clone();
        self.add_node_in(ip, spec, &session)
    }

    /// Starts one more node offering `spec` with a session directory of its own, as a
    /// node on another machine has (its logs, executable cache and spill files are
    /// there, not in the head's): its index in the daemon list, and that directory.
    pub fn add_node_elsewhere(
        &mut self,
        ip: &str,
        spec: &NodeSpec,
    ) -> Result<(usize, PathBuf), HarnessError> {
        let session = self.dir.join(format!("machine-{}", self.daemons.len()));
        let made =
            session::create(&session).and_then(|()| session::write_token(&session, &self.token));
        made.map_err(|e| HarnessError::Start(format!("creating {}: {e}", session.display())))?;
        let index = self.add_node_in(ip, spec, &session)?;
        Ok((index, session))
    }

    fn add_node_in(
        &mut self,
        ip: &str,
        spec: &NodeSpec,
        session: &Path,
    ) -> Result<usize, HarnessError> {
        let mut args: Vec<String> = ["start", "--block", "--address", &self.head]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(node_args(spec));
        args.extend(["--node-ip-address".to_string(), ip.to_string()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let child = self.spawn_in(&args, session)?;
        self.daemons.push(child);
        Ok(self.daemons.len() - 1)
    }

    /// Kills the head outright (SIGKILL) and starts it again on the same port and
    /// session: it takes back its tables and token, and the nodes reconnect.
    pub fn restart_head(&mut self, nodes: usize) -> Result<(), HarnessError> {
        self.kill_head();
        self.start_head_again()?;
        self.wait_nodes(nodes)
    }

    /// Kills the head outright (SIGKILL), leaving the nodes running.
    pub fn kill_head(&mut self) {
        session::signal(self.daemons[0].id(), 9);
        let _ = self.daemons[0].wait();
        let _ = std::fs::remove_file(self.dir.join("address"));
    }

    /// Starts the head again on its port and session, after [`LocalCluster::kill_head`].
    pub fn start_head_again(&mut self) -> Result<(), HarnessError> {
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
        ])?;
        let dir = self.dir.clone();
        wait_for(
            || std::fs::read_to_string(dir.join("address")).ok(),
            "the restarted head",
        )?;
        Ok(())
    }

    /// The PID of a daemon (0 is the head).
    pub fn daemon_pid(&self, index: usize) -> u32 {
        self.daemons[index].id()
    }

    /// How many daemons were started (the head and the nodes, dead ones included).
    pub fn daemons(&self) -> usize {
        self.daemons.len()
    }

    /// Kills every daemon outright (SIGKILL) and waits for them: the cluster is gone.
    pub fn kill_all(&mut self) {
        for c in self.daemons.iter_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The head's view of the nodes (empty if the head does not answer).
    pub fn nodes(&self) -> Vec<NodeView> {
        self.view_from(&self.head)
    }

    /// What the daemon at `address` answers to a status request: the head, every node
    /// it knows; a node, itself and the peers it reaches, as its last view has them
    /// (empty if it does not answer).
    pub fn view_from(&self, address: &str) -> Vec<NodeView> {
        let Ok(io) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return Vec::new();
        };
        io.block_on(async {
            let (mut s, _) = tokio::time::timeout(
                wire::HANDSHAKE_TIMEOUT,
                wire::connect(address, &self.token, Role::Cli),
            )
            .await
            .ok()?
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
    pub fn wait_nodes(&self, n: usize) -> Result<(), HarnessError> {
        let alive = wait_for(
            || {
                let alive: Vec<NodeView> = self.nodes().into_iter().filter(|v| v.alive).collect();
                (alive.len() >= n).then_some(alive)
            },
            "the nodes to join",
        )?;
        // A node learns of its peers with its next heartbeat: a test that places work
        // on a peer right away waits until every node reaches every other.
        wait_for(
            || {
                alive
                    .iter()
                    .all(|v| self.view_from(&v.address).len() >= n)
                    .then_some(())
            },
            "every node to reach its peers",
        )
    }

    /// The PIDs of the cluster's worker processes (started from its stored or cached
    /// executables, which are all in its session directories).
    pub fn worker_pids(&self) -> Vec<u32> {
        let marker = &self.dir;
        let mut pids = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            if let Ok(exe) = std::fs::read_link(entry.path().join("exe")) {
                if exe.starts_with(marker) {
                    pids.push(pid);
                }
            }
        }
        pids
    }

    /// The last lines of every log of the cluster: the daemons' and their workers'.
    pub fn logs(&self) -> String {
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
        self.connect_with(crate::Config::default())
    }

    /// Starts the driver runtime in this process with `config`, connected to the
    /// cluster.
    pub fn connect_with(&self, config: crate::Config) -> crate::Result<()> {
        crate::init_with(config.address(&self.head).token(&self.token))
    }

    /// The address (`127.0.0.1:PORT`) the head's dashboard listens on, once it does.
    pub fn dashboard(&self) -> Result<String, HarnessError> {
        let file = self.dir.join("dashboard");
        wait_for(
            || std::fs::read_to_string(&file).ok(),
            "the head's dashboard to listen",
        )
    }

    /// Where the session directory is.
    pub fn session(&self) -> &Path {
        &self.dir
    }

    /// Runs the CLI, `prism args...`, against this cluster; whether it succeeded, and
    /// what it wrote to stdout and to stderr.
    pub fn cli(&self, args: &[&str]) -> (bool, String, String) {
        match Command::new(&self.bin)
            .args(args)
            .env("PRISM_SESSION_DIR", &self.dir)
            .env_remove("PRISM_ADDRESS")
            .output()
        {
            Ok(out) => (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).to_string(),
                String::from_utf8_lossy(&out.stderr).to_string(),
            ),
            Err(e) => (
                false,
                String::new(),
                format!("cannot run {}: {e}", self.bin.display()),
            ),
        }
    }
}

impl LocalCluster {
    /// The JSON `prism args... --format json` prints against this cluster; panics,
    /// with what the command said, if it fails or prints something else.
    pub fn cli_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.extend(["--format", "json"]);
        let (ok, out, err) = self.cli(&all);
        assert!(ok, "prism {args:?} failed: {err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("prism {args:?}: {e}: {out}"))
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
