//! Highly available Redis for the fleet's failover tests: a real Redis Cluster (three masters,
//! three replicas) and a real Sentinel group (a master, two replicas, three sentinels), every
//! process a `redis-server` on loopback, told apart by port. Failovers are real: a master is
//! killed with SIGKILL and the survivors elect a new one.
//!
//! Administration goes through `redis-cli` (Debian's `redis-tools`, which `redis-server`
//! depends on).

use crate::scratch::TempDir;
use std::net::TcpListener;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

/// How long a node may be unreachable before the others fail it over (cluster), or before a
/// sentinel thinks it down: short, so that a failover takes about two seconds.
const NODE_TIMEOUT_MS: u64 = 1000;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// `redis-cli -p PORT args…`, its output (empty if the server did not answer).
async fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .await
        .expect("redis-cli is not installed: apt-get install redis-tools (.ci/run does)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Poll `check` every 50 ms for up to `seconds`; panic with `what` if it never holds.
async fn wait_for<F, Fut>(seconds: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..seconds * 20 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} within {seconds} s");
}

/// One `redis-server` process.
struct Node {
    port: u16,
    child: Option<Child>,
}

impl Node {
    fn spawn(port: u16, args: &[String]) -> Self {
        let child = Command::new("redis-server")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server is not installed: apt-get install redis-server (.ci/run does)");
        Self {
            port,
            child: Some(child),
        }
    }

    async fn answers(&self) -> bool {
        cli(self.port, &["PING"]).await.trim() == "PONG"
    }

    async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// SIGSTOP (`true`) or SIGCONT (`false`): a frozen process holds its connections open and
    /// answers nothing, as a replica that stopped replicating.
    fn freeze(&self, frozen: bool) {
        let Some(pid) = self.child.as_ref().and_then(Child::id) else {
            return;
        };
        let signal = if frozen { "-STOP" } else { "-CONT" };
        let _ = std::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .status();
    }
}

fn base_args(port: u16, dir: &std::path::Path) -> Vec<String> {
    [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        &dir.display().to_string(),
    ]
    .map(String::from)
    .to_vec()
}

/// A Redis Cluster of three masters and three replicas on loopback, each slot range served by
/// one master and copied to one replica. Killed when dropped.
pub struct RedisCluster {
    nodes: Vec<Node>,
    _dir: TempDir,
}

impl RedisCluster {
    /// Start the six nodes, assign the slots, pair the replicas, and wait until the cluster is
    /// `ok` on every node and every replica is in sync.
    pub async fn start() -> Self {
        let dir = TempDir::new("redis-cluster");
        let mut nodes = Vec::new();
        let mut buses = Vec::new();
        for i in 0..6 {
            let (port, bus) = (free_port(), free_port());
            let mut args = base_args(port, dir.path());
            args.extend(
                [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-port",
                    &bus.to_string(),
                    "--cluster-config-file",
                    &dir.path().join(format!("nodes-{i}.conf")).display().to_string(),
                    "--cluster-node-timeout",
                    &NODE_TIMEOUT_MS.to_string(),
                ]
                .map(String::from),
            );
            nodes.push(Node::spawn(port, &args));
            buses.push(bus);
        }
        for node in &nodes {
            wait_for(30, "a cluster node answered PING", || node.answers()).await;
        }
        let ranges = [("0", "5460"), ("5461", "10922"), ("10923", "16383")];
        for (node, (from, to)) in nodes.iter().zip(ranges) {
            cli(node.port, &["CLUSTER", "ADDSLOTSRANGE", from, to]).await;
        }
        let first = nodes[0].port;
        let meet_all = || async {
            for (node, bus) in nodes.iter().zip(&buses).skip(1) {
                cli(
                    first,
                    &[
                        "CLUSTER",
                        "MEET",
                        "127.0.0.1",
                        &node.port.to_string(),
                        &bus.to_string(),
                    ],
                )
                .await;
            }
        };
        meet_all().await;
        // A handshake that takes longer than the node timeout (a loaded CI machine) is dropped
        // by Redis and never retried: say MEET again, every two seconds, until all six know
        // each other (MEET of a known node is a no-op).
        let mut polls = 0u32;
        for node in &nodes {
            wait_for(30, "every node knows the six", || {
                polls += 1;
                let again = polls.is_multiple_of(40);
                let meet = &meet_all;
                async move {
                    if again {
                        meet().await;
                    }
                    cli(node.port, &["CLUSTER", "NODES"]).await.lines().count() == 6
                }
            })
            .await;
        }
        for i in 3..6 {
            let master_id = cli(nodes[i - 3].port, &["CLUSTER", "MYID"]).await;
            cli(nodes[i].port, &["CLUSTER", "REPLICATE", master_id.trim()]).await;
        }
        let cluster = Self { nodes, _dir: dir };
        for node in &cluster.nodes {
            wait_for(30, "the cluster is ok on every node", || async {
                cli(node.port, &["CLUSTER", "INFO"])
                    .await
                    .contains("cluster_state:ok")
            })
            .await;
        }
        for replica in &cluster.nodes[3..] {
            wait_for(30, "every replica is in sync", || async {
                cli(replica.port, &["INFO", "replication"])
                    .await
                    .contains("master_link_status:up")
            })
            .await;
        }
        cluster
    }

    /// `redis+cluster://127.0.0.1:P1,…/`, every node (the store needs only one to start).
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis+cluster://{}/", hosts.join(","))
    }

    /// `redis://127.0.0.1:PORT/` for each node, for `authwire_redis::RedisStore::cluster`-style configuration.
    pub fn node_urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}/", n.port))
            .collect()
    }

    fn alive(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.child.is_some())
    }

    /// The hash slot of `key` (as the cluster computes it).
    pub async fn slot_of(&self, key: &str) -> u16 {
        let port = self.alive().next().expect("a live node").port;
        cli(port, &["CLUSTER", "KEYSLOT", key])
            .await
            .trim()
            .parse()
            .expect("a slot number")
    }

    /// The port of the node that is master of `slot` now, as a live node sees it.
    pub async fn master_of(&self, slot: u16) -> Option<u16> {
        let port = self.alive().next()?.port;
        let nodes = cli(port, &["CLUSTER", "NODES"]).await;
        nodes.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let flags = fields.get(2)?;
            if !flags.contains("master") || flags.contains("fail") {
                return None;
            }
            let serves = fields.iter().skip(8).any(|range| match range.split_once('-') {
                Some((a, b)) => {
                    a.parse::<u16>().is_ok_and(|a| a <= slot) && b.parse::<u16>().is_ok_and(|b| slot <= b)
                }
                None => range.parse::<u16>() == Ok(slot),
            });
            let port = fields.get(1)?.split(['@', ':']).nth(1)?.parse().ok()?;
            serves.then_some(port)
        })
    }

    /// Kill the master of `slot` (SIGKILL), and wait until its replica has taken its place and
    /// the cluster is `ok` again; returns the new master's port.
    pub async fn kill_master_of(&mut self, slot: u16) -> u16 {
        let old = self.master_of(slot).await.expect("the slot has a master");
        self.kill(old).await;
        let mut new = None;
        for _ in 0..400 {
            new = self.master_of(slot).await.filter(|p| *p != old);
            if new.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let new = new.expect("a replica took over the killed master's slots within 20 s");
        let survivors: Vec<u16> = self.alive().map(|n| n.port).collect();
        for port in survivors {
            wait_for(30, "the cluster is ok again", || async move {
                cli(port, &["CLUSTER", "INFO"]).await.contains("cluster_state:ok")
            })
            .await;
        }
        new
    }

    /// Kill the node on `port` (SIGKILL) without waiting for anything.
    pub async fn kill(&mut self, port: u16) {
        if let Some(node) = self.nodes.iter_mut().find(|n| n.port == port) {
            node.kill().await;
        }
    }
}

/// A Redis master with two replicas, watched by three sentinels (quorum two) that fail it over
/// about two seconds after it dies. Killed when dropped.
pub struct RedisSentinel {
    master_name: String,
    servers: Vec<Node>,
    sentinels: Vec<Node>,
    _dir: TempDir,
}

impl RedisSentinel {
    /// The name the sentinels monitor the group under.
    pub const MASTER_NAME: &'static str = "authwire-master";

    /// Start the three servers and three sentinels, and wait until every sentinel knows the
    /// master, both replicas and the other sentinels, and the replicas are in sync.
    pub async fn start() -> Self {
        let dir = TempDir::new("redis-sentinel");
        let master_port = free_port();
        let mut servers = vec![Node::spawn(master_port, &base_args(master_port, dir.path()))];
        for _ in 0..2 {
            let port = free_port();
            let mut args = base_args(port, dir.path());
            args.extend(["--replicaof", "127.0.0.1", &master_port.to_string()].map(String::from));
            servers.push(Node::spawn(port, &args));
        }
        let mut sentinels = Vec::new();
        for i in 0..3 {
            let port = free_port();
            // A sentinel rewrites its configuration file: one each, in the scratch folder.
            let conf = dir.write(
                &format!("sentinel-{i}.conf"),
                &format!(
                    "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor {name} 127.0.0.1 {master_port} 2\nsentinel down-after-milliseconds {name} {NODE_TIMEOUT_MS}\nsentinel failover-timeout {name} 4000\nsentinel parallel-syncs {name} 2\n",
                    dir.path().display(),
                    name = Self::MASTER_NAME,
                ),
            );
            sentinels.push(Node::spawn(
                port,
                &[conf.display().to_string(), "--sentinel".into()],
            ));
        }
        let group = Self {
            master_name: Self::MASTER_NAME.into(),
            servers,
            sentinels,
            _dir: dir,
        };
        for replica in &group.servers[1..] {
            wait_for(30, "both replicas are in sync", || async {
                cli(replica.port, &["INFO", "replication"])
                    .await
                    .contains("master_link_status:up")
            })
            .await;
        }
        for sentinel in &group.sentinels {
            wait_for(
                60,
                "every sentinel knows both replicas and the other sentinels",
                || async {
                    let replicas = cli(sentinel.port, &["SENTINEL", "REPLICAS", &group.master_name]).await;
                    let others = cli(sentinel.port, &["SENTINEL", "SENTINELS", &group.master_name]).await;
                    replicas.lines().filter(|l| *l == "ip").count() >= 2
                        && others.lines().filter(|l| *l == "runid").count() >= 2
                },
            )
            .await;
        }
        group
    }

    /// `redis+sentinel://127.0.0.1:S1,…/authwire-master`.
    pub fn url(&self) -> String {
        format!(
            "redis+sentinel://{}/{}",
            self.sentinel_hosts().join(","),
            self.master_name
        )
    }

    /// `redis://127.0.0.1:PORT/` for each sentinel, for `authwire_redis::RedisStore::sentinel`-style
    /// configuration.
    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinel_hosts()
            .iter()
            .map(|h| format!("redis://{h}/"))
            .collect()
    }

    fn sentinel_hosts(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect()
    }

    /// The master's port, as the first sentinel that answers names it.
    pub async fn master_port(&self) -> Option<u16> {
        for sentinel in &self.sentinels {
            let answer = cli(
                sentinel.port,
                &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", &self.master_name],
            )
            .await;
            if let Some(port) = answer.lines().nth(1).and_then(|p| p.trim().parse().ok()) {
                return Some(port);
            }
        }
        None
    }

    /// Kill the master (SIGKILL) and wait until the sentinels have promoted a replica and it
    /// answers as master; returns its port.
    pub async fn kill_master(&mut self) -> u16 {
        let old = self.master_port().await.expect("a master");
        if let Some(node) = self.servers.iter_mut().find(|n| n.port == old) {
            node.kill().await;
        }
        for _ in 0..600 {
            if let Some(port) = self.master_port().await.filter(|p| *p != old)
                && cli(port, &["ROLE"]).await.starts_with("master")
            {
                return port;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the sentinels did not promote a replica within 30 s");
    }

    /// Freeze (SIGSTOP) or thaw (SIGCONT) the two servers started as replicas: frozen, they
    /// acknowledge nothing, so no write can reach them. (SIGKILL on drop ends them frozen.)
    pub fn freeze_replicas(&self, frozen: bool) {
        for replica in &self.servers[1..] {
            replica.freeze(frozen);
        }
    }
}
