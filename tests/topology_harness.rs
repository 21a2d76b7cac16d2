//! Self-checks of the topology harness (tests/support/topology.rs), with `redis-cli` only and
//! no stickless: each topology comes up and each fault helper does what it says. Ignored by
//! default (they test the harness, not the product); run them after changing the harness:
//! `cargo test --test topology_harness -- --ignored --nocapture`.

mod support;

use std::time::{Duration, Instant};

use support::topology::{renamed, Cluster, Replicated, SentinelSet, Standalone, TlsRedis};

#[test]
#[ignore]
fn harness_tls_redis() {
    let redis = TlsRedis::start();
    // The ACL user may touch its own keys with its commands, nothing else.
    assert!(redis
        .as_acl_user(&["HSET", "stickless:session:x", "a", "1"])
        .is_ok());
    assert!(redis
        .as_acl_user(&["PEXPIRE", "stickless:session:x", "10000"])
        .is_ok());
    let denied = redis
        .as_acl_user(&["HSET", "other:x", "a", "1"])
        .unwrap_err();
    assert!(denied.contains("NOPERM"), "{denied}");
    let denied = redis.as_acl_user(&["GET", "stickless:x"]).unwrap_err();
    assert!(denied.contains("NOPERM"), "{denied}");
    assert!(redis.as_acl_user(&["SCRIPT", "LOAD", "return 1"]).is_ok());
    assert!(redis.as_acl_user(&["SCRIPT", "FLUSH"]).is_err());
    // Renamed commands are gone under their names, there under the new ones for the admin.
    assert!(redis.node.try_cmd(&["CONFIG", "GET", "maxmemory"]).is_err());
    assert!(redis.node.try_cmd(&["FLUSHALL"]).is_err());
    assert!(redis
        .node
        .try_cmd(&[&renamed("CONFIG"), "GET", "maxmemory"])
        .is_ok());
    assert_eq!(redis.keys("*"), ["stickless:session:x"]);
    assert!(redis.acl_log().contains("other:x"));
    // TLS only: nothing listens in plain text, and the default user is off.
    let plain = support::topology::Admin::plain(redis.port);
    assert!(plain.try_cmd(&["PING"]).is_err());
    redis.node.restart();
    assert!(redis.node.try_cmd(&["PING"]).is_ok());

    let strict = TlsRedis::start_requiring_client_cert();
    assert!(strict.node.try_cmd(&["PING"]).is_ok(), "with a client cert");
    let mut no_cert = strict.node.admin.clone();
    no_cert.cert = None;
    assert!(no_cert.try_cmd(&["PING"]).is_err(), "without a client cert");
}

#[test]
#[ignore]
fn harness_cluster() {
    let started = Instant::now();
    let cluster = Cluster::start();
    println!("cluster up in {:?}: {}", started.elapsed(), cluster.url());
    let primaries = cluster.primaries();
    assert_eq!(primaries.len(), 3);
    let keys: Vec<String> = (0..20).map(|i| format!("stickless:session:k{i}")).collect();
    for key in &keys {
        cluster.on_owner(key, &["HSET", key, "n", "1"]);
    }

    // Kill the primary owning k0; its replica takes over with the data.
    let victim = cluster.owner_of(cluster.slot_of(&keys[0]));
    let t = Instant::now();
    let promoted = cluster.kill_primary(victim);
    println!(
        "kill_primary: node {victim} -> {promoted} in {:?}",
        t.elapsed()
    );
    assert_eq!(
        cluster.on_owner(&keys[0], &["HGET", &keys[0], "n"]).trim(),
        "1"
    );
    // Bring it back: it rejoins as a replica of the promoted node.
    cluster.nodes[victim].revive();
    cluster.wait_healthy(Duration::from_secs(20));
    assert_eq!(cluster.replica_of(promoted), victim);

    // Manual failover back.
    let t = Instant::now();
    cluster.failover(victim);
    println!("failover in {:?}", t.elapsed());
    assert_eq!(cluster.owner_of(cluster.slot_of(&keys[0])), victim);

    // Move the slots of some keys to another primary.
    let target = *cluster
        .primaries()
        .iter()
        .find(|&&p| p != victim)
        .expect("another primary");
    let moving: Vec<String> = keys
        .iter()
        .filter(|k| cluster.owner_of(cluster.slot_of(k)) != target)
        .take(5)
        .cloned()
        .collect();
    let t = Instant::now();
    let moved = cluster.move_slots_of(&moving, target);
    println!("moved {moved} slots in {:?}", t.elapsed());
    assert_eq!(moved, 5);
    for key in &moving {
        assert_eq!(cluster.owner_of(cluster.slot_of(key)), target);
        assert_eq!(cluster.nodes[target].cmd(&["HGET", key, "n"]).trim(), "1");
    }
    assert_eq!(cluster.all_keys().len(), 20);

    // SIGSTOP / SIGCONT / restart of a replica.
    let replica = cluster.replica_of(target);
    cluster.nodes[replica].freeze();
    assert!(cluster.nodes[replica].try_cmd(&["PING"]).is_err());
    cluster.nodes[replica].thaw();
    assert!(cluster.nodes[replica].try_cmd(&["PING"]).is_ok());
    cluster.nodes[replica].restart();
    cluster.wait_healthy(Duration::from_secs(20));
    println!("total {:?}", started.elapsed());
}

#[test]
#[ignore]
fn harness_sentinel() {
    let started = Instant::now();
    let set = SentinelSet::start();
    println!("sentinel up in {:?}: {}", started.elapsed(), set.url());
    assert_eq!(set.primary_index(), Some(0));
    set.primary().cmd(&["SET", "k", "v"]);

    let t = Instant::now();
    assert_eq!(set.failover(), 1);
    println!("SENTINEL FAILOVER in {:?}", t.elapsed());
    assert_eq!(set.data[1].cmd(&["GET", "k"]).trim(), "v");

    let t = Instant::now();
    let settled = set.swap_roles();
    println!("swap_roles -> data-{settled} in {:?}", t.elapsed());
    assert_eq!(set.primary().cmd(&["GET", "k"]).trim(), "v");
    let writable = set.primary();
    writable.cmd(&["SET", "k2", "v2"]);
    let other = &set.data[1 - settled];
    let readonly = other.try_cmd(&["SET", "k3", "v"]).unwrap_err();
    assert!(readonly.contains("READONLY"), "{readonly}");

    let t = Instant::now();
    let new = set.kill_primary();
    println!("kill_primary -> data-{new} in {:?}", t.elapsed());
    assert_eq!(set.primary().cmd(&["GET", "k2"]).trim(), "v2");
    set.data[1 - new].revive();
    let t = Instant::now();
    set.wait_stable(new, Duration::from_secs(30));
    println!("old primary back as replica in {:?}", t.elapsed());

    let replica = &set.data[1 - new];
    replica.freeze();
    replica.thaw();
    replica.restart();
    set.wait_stable(new, Duration::from_secs(30));
    println!("total {:?}", started.elapsed());
}

#[test]
#[ignore]
fn harness_standalone_and_replicated() {
    let redis = Standalone::durable();
    redis.node.cmd(&["SET", "k", "v"]);
    redis.node.freeze();
    assert!(redis.node.try_cmd(&["PING"]).is_err());
    redis.node.thaw();
    redis.node.restart();
    assert_eq!(redis.node.cmd(&["GET", "k"]).trim(), "v", "AOF survived");

    let pair = Replicated::start();
    pair.primary.cmd(&["SET", "k", "v"]);
    support::topology::wait_for("replication", Duration::from_secs(5), || {
        pair.replica.cmd(&["GET", "k"]).trim() == "v"
    });
    let acked = pair.primary.admin.pipe("SET k w\nWAIT 1 500\n");
    assert_eq!(acked.lines().collect::<Vec<_>>(), ["OK", "1"], "{acked}");
    pair.replica.freeze();
    assert!(pair.replica.try_cmd(&["PING"]).is_err());
    let acked = pair.primary.admin.pipe("SET k x\nWAIT 1 200\n");
    assert_eq!(acked.lines().collect::<Vec<_>>(), ["OK", "0"], "{acked}");
    pair.replica.thaw();
}
