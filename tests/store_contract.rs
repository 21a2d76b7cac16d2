//! One contract, every store: the same suite runs against the embedded `memory://` store, a
//! real `redis-server`, and the real topologies of tests/support/topology.rs (TLS with a
//! minimal ACL user, cluster, Sentinel).

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use stickless::config::{NearCacheSettings, OnUnavailable, StoreSettings, TlsFiles};
use stickless::session::id::SessionId;
use stickless::session::record::Record;
use stickless::store::{Delta, Owners, Principal, SessionStore, Store, StoreError, StoreUrl};
use support::topology::{Cluster, SentinelSet, TlsRedis};
use support::RedisServer;

fn settings(url: &str) -> StoreSettings {
    StoreSettings {
        url: StoreUrl::parse(url).expect("store url"),
        key_prefix: "contract".into(),
        on_unavailable: OnUnavailable::FailClosed,
        timeout: Duration::from_millis(500),
        tls: Default::default(),
        durability: None,
        // Every Redis topology writes events through the contract (the memory store has
        // none); with the TLS server's minimal ACL user this checks the rule allows them.
        events: Some(1000),
        near_cache: None,
    }
}

/// Settings for a `rediss://` store trusting `ca`, with the key prefix the ACL allows.
fn tls_settings(url: &str, ca: &std::path::Path) -> StoreSettings {
    StoreSettings {
        key_prefix: "stickless".into(),
        tls: TlsFiles {
            ca: Some(std::fs::read(ca).expect("read CA")),
            client: None,
        },
        ..settings(url)
    }
}

fn id() -> SessionId {
    SessionId::generate().expect("randomness")
}

fn record(pairs: &[(&str, &[u8])]) -> Record {
    Record {
        created: 1_700_000_000_000,
        attributes: pairs
            .iter()
            .map(|(n, v)| (n.to_string(), Bytes::copy_from_slice(v)))
            .collect::<BTreeMap<_, _>>(),
    }
}

const TTL: Duration = Duration::from_secs(60);

async fn contract(store: Store) {
    // Missing sessions are None, and reading writes nothing.
    let missing = id();
    assert_eq!(store.load(&missing).await.expect("load"), None);

    // Create / load round trip, byte for byte, with a TTL no longer than asked.
    let a = id();
    let first = record(&[("user", b"alice"), ("blob", b"\x00\xff\x80 ;,\"")]);
    store.create(&a, &first, TTL, None).await.expect("create");
    let loaded = store.load(&a).await.expect("load").expect("present");
    assert_eq!(loaded.record, first);
    assert!(
        loaded.ttl <= TTL && loaded.ttl > TTL - Duration::from_secs(5),
        "{:?}",
        loaded.ttl
    );

    // Delta update: only named attributes change, TTL is reset.
    let set = [("role".to_string(), Bytes::from_static(b"admin"))];
    let remove = ["blob".to_string()];
    let applied = store
        .update(
            &a,
            Delta {
                remove: &remove,
                set: &set,
            },
            Duration::from_secs(120),
            Owners::default(),
        )
        .await
        .expect("update");
    assert!(applied);
    let loaded = store.load(&a).await.expect("load").expect("present");
    assert_eq!(
        loaded.record,
        record(&[("user", b"alice"), ("role", b"admin")])
    );
    assert!(loaded.ttl > TTL, "update resets the TTL");

    // Concurrent deltas on different attributes all persist.
    let mut writes = Vec::new();
    for i in 0..20 {
        let store = store.clone();
        let a = a.clone();
        writes.push(tokio::spawn(async move {
            let set = [(format!("k{i}"), Bytes::from(i.to_string()))];
            store
                .update(
                    &a,
                    Delta {
                        remove: &[],
                        set: &set,
                    },
                    TTL,
                    Owners::default(),
                )
                .await
        }));
    }
    for w in writes {
        assert!(w.await.expect("task").expect("update"));
    }
    let loaded = store.load(&a).await.expect("load").expect("present");
    for i in 0..20 {
        assert_eq!(
            loaded.record.attributes.get(&format!("k{i}")),
            Some(&Bytes::from(i.to_string()))
        );
    }

    // Updating or touching a missing session creates nothing.
    assert!(!store
        .update(
            &missing,
            Delta {
                remove: &[],
                set: &set
            },
            TTL,
            Owners::default()
        )
        .await
        .expect("update"));
    store.touch(&missing, TTL, None).await.expect("touch");
    assert_eq!(store.load(&missing).await.expect("load"), None);

    // Touch sets the TTL of a live session.
    store
        .touch(&a, Duration::from_secs(30), None)
        .await
        .expect("touch");
    let loaded = store.load(&a).await.expect("load").expect("present");
    assert!(loaded.ttl <= Duration::from_secs(30));

    // Rotate: the new id has the record, the old one is gone at once.
    let b = id();
    let rotated = record(&[("user", b"alice")]);
    assert!(store
        .rotate(&a, &b, &rotated, TTL, Owners::default())
        .await
        .expect("rotate"));
    assert_eq!(store.load(&a).await.expect("load"), None);
    assert_eq!(
        store.load(&b).await.expect("load").expect("present").record,
        rotated
    );

    // Rotating a session that is gone resurrects nothing, under either id.
    let gone = id();
    assert!(!store
        .rotate(&a, &gone, &rotated, TTL, Owners::default())
        .await
        .expect("rotate"));
    assert_eq!(store.load(&a).await.expect("load"), None);
    assert_eq!(store.load(&gone).await.expect("load"), None);

    // Delete.
    assert!(store.delete(&b, None).await.expect("delete"));
    assert_eq!(store.load(&b).await.expect("load"), None);
    assert!(!store
        .delete(&b, None)
        .await
        .expect("deleting twice is fine"));

    // Expiry is honoured by the store itself.
    let c = id();
    store
        .create(
            &c,
            &record(&[("user", b"carol")]),
            Duration::from_millis(300),
            None,
        )
        .await
        .expect("create");
    assert!(store.load(&c).await.expect("load").is_some());
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(store.load(&c).await.expect("load"), None);
    assert!(
        !store
            .update(
                &c,
                Delta {
                    remove: &[],
                    set: &set
                },
                TTL,
                Owners::default()
            )
            .await
            .expect("update"),
        "no resurrection"
    );
    assert_eq!(store.load(&c).await.expect("load"), None);

    principals(&store).await;
}

fn sorted(mut ids: Vec<SessionId>) -> Vec<String> {
    let mut ids: Vec<String> = ids.drain(..).map(|id| id.as_str().to_owned()).collect();
    ids.sort();
    ids
}

fn names(ids: &[&SessionId]) -> Vec<String> {
    sorted(ids.iter().map(|id| (*id).clone()).collect())
}

/// The principal index: listed while alive, not after; follows updates, rotations, deletes.
async fn principals(store: &Store) {
    let alice = Principal::new(Bytes::from_static(b"alice"));
    let bob = Principal::new(Bytes::from_static(b"b\xc3\xb6b / {x}"));
    let nobody = Principal::new(Bytes::from_static(b"nobody"));
    let (a1, a2, b1) = (id(), id(), id());
    for (id, who) in [(&a1, &alice), (&a2, &alice), (&b1, &bob)] {
        store
            .create(id, &record(&[("user", &who.value)]), TTL, Some(who))
            .await
            .expect("create");
    }
    let loaded = store.load(&a1).await.expect("load").expect("present");
    assert_eq!(loaded.principal.as_deref(), Some(alice.tag.as_str()));
    assert_eq!(
        sorted(store.sessions_of(&alice).await.expect("list")),
        names(&[&a1, &a2])
    );
    assert_eq!(
        sorted(store.sessions_of(&bob).await.expect("list")),
        names(&[&b1])
    );
    assert!(store.sessions_of(&nobody).await.expect("list").is_empty());

    // An update that changes the principal moves the session between indexes.
    let set = [("user".to_string(), bob.value.clone())];
    let moved = Owners {
        old: Some(&alice),
        new: Some(&bob),
    };
    assert!(store
        .update(
            &a2,
            Delta {
                remove: &[],
                set: &set
            },
            TTL,
            moved
        )
        .await
        .expect("update"));
    assert_eq!(
        store
            .load(&a2)
            .await
            .expect("load")
            .expect("present")
            .principal
            .as_deref(),
        Some(bob.tag.as_str())
    );
    assert_eq!(
        sorted(store.sessions_of(&alice).await.expect("list")),
        names(&[&a1])
    );
    assert_eq!(
        sorted(store.sessions_of(&bob).await.expect("list")),
        names(&[&a2, &b1])
    );

    // A rotation: the old id leaves, the new one joins; touching keeps it listed.
    let a3 = id();
    let same = Owners {
        old: Some(&alice),
        new: Some(&alice),
    };
    assert!(store
        .rotate(&a1, &a3, &record(&[("user", b"alice")]), TTL, same)
        .await
        .expect("rotate"));
    assert_eq!(
        sorted(store.sessions_of(&alice).await.expect("list")),
        names(&[&a3])
    );
    store
        .touch(&a3, Duration::from_secs(90), Some(&alice.tag))
        .await
        .expect("touch");
    assert_eq!(
        sorted(store.sessions_of(&alice).await.expect("list")),
        names(&[&a3])
    );

    // An update that removes the principal takes it out of the index.
    let remove = ["user".to_string()];
    let dropped = Owners {
        old: Some(&alice),
        new: None,
    };
    assert!(store
        .update(
            &a3,
            Delta {
                remove: &remove,
                set: &[]
            },
            TTL,
            dropped
        )
        .await
        .expect("update"));
    assert!(store.sessions_of(&alice).await.expect("list").is_empty());
    assert_eq!(
        store
            .load(&a3)
            .await
            .expect("load")
            .expect("present")
            .principal,
        None
    );
    assert!(store.delete(&a3, None).await.expect("delete"));

    // Ending all of a principal's sessions: exactly theirs.
    let other = id();
    store
        .create(&other, &record(&[("user", b"alice")]), TTL, Some(&alice))
        .await
        .expect("create");
    assert_eq!(store.end_all(&bob).await.expect("end all"), 2);
    assert_eq!(store.load(&a2).await.expect("load"), None);
    assert_eq!(store.load(&b1).await.expect("load"), None);
    assert!(store.sessions_of(&bob).await.expect("list").is_empty());
    assert_eq!(store.end_all(&bob).await.expect("end all"), 0);
    assert_eq!(
        sorted(store.sessions_of(&alice).await.expect("list")),
        names(&[&other])
    );

    // A deleted session leaves its index; one that expired is never listed.
    assert!(store.delete(&other, Some(&alice)).await.expect("delete"));
    let short = id();
    store
        .create(
            &short,
            &record(&[("user", b"alice")]),
            Duration::from_millis(200),
            Some(&alice),
        )
        .await
        .expect("create");
    assert_eq!(
        sorted(store.sessions_of(&alice).await.expect("list")),
        names(&[&short])
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(store.sessions_of(&alice).await.expect("list").is_empty());
    assert_eq!(store.end_all(&alice).await.expect("end all"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_meets_the_contract() {
    contract(Store::open(&settings("memory://")).expect("open")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_meets_the_contract() {
    let redis = RedisServer::start();
    contract(Store::open(&settings(&redis.url())).expect("open")).await;
    // Everything it wrote lives under the prefix (and has expired or been deleted by now,
    // except the session the contract left behind on purpose: none).
    assert!(
        redis
            .keys()
            .iter()
            .all(|k| k.starts_with("contract:session:")
                || k.starts_with("contract:principal:")
                || k == "contract:events"),
        "{:?}",
        redis.keys()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_is_bounded() {
    let store = Store::open(&settings("memory://?max_sessions=2")).expect("open");
    store
        .create(&id(), &record(&[]), TTL, None)
        .await
        .expect("first");
    let short = id();
    store
        .create(&short, &record(&[]), Duration::from_millis(100), None)
        .await
        .expect("second");
    assert!(matches!(
        store.create(&id(), &record(&[]), TTL, None).await,
        Err(StoreError::Full)
    ));
    // Expired sessions make room.
    tokio::time::sleep(Duration::from_millis(200)).await;
    store
        .create(&id(), &record(&[]), TTL, None)
        .await
        .expect("room after expiry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_times_out_and_recovers() {
    let mut redis = RedisServer::start();
    let store = Store::open(&settings(&redis.url())).expect("open");
    let a = id();
    store
        .create(&a, &record(&[("user", b"alice")]), TTL, None)
        .await
        .expect("create");
    redis.stop();
    let started = std::time::Instant::now();
    assert!(store.load(&a).await.is_err());
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    redis.restart();
    let recovered =
        support::eventually(Duration::from_secs(10), async || store.ping().await.is_ok()).await;
    assert!(recovered, "the store reconnects after a Redis restart");
    store
        .create(&a, &record(&[("user", b"alice")]), TTL, None)
        .await
        .expect("write after restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_acl_store_meets_the_contract() {
    let redis = TlsRedis::start();
    let store = Store::open(&tls_settings(&redis.url(), &redis.certs.ca)).expect("open");
    contract(store).await;
    assert!(redis
        .keys("*")
        .iter()
        .all(|k| k.starts_with("stickless:session:")
            || k.starts_with("stickless:principal:")
            || k == "stickless:events"));
    // The minimal ACL user was enough for every operation.
    let denied = redis.acl_log();
    assert!(denied.trim().is_empty(), "ACL LOG: {denied}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_store_meets_the_contract() {
    let cluster = Cluster::start();
    contract(Store::open(&settings(&cluster.url())).expect("open")).await;
    assert!(cluster
        .all_keys()
        .iter()
        .all(|k| k.starts_with("contract:session:")
            || k.starts_with("contract:principal:")
            || k == "contract:events"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_store_meets_the_contract() {
    let set = SentinelSet::start();
    contract(Store::open(&settings(&set.url())).expect("open")).await;
    let keys = set.primary().cmd(&["KEYS", "*"]);
    assert!(keys
        .lines()
        .filter(|k| !k.is_empty())
        .all(|k| k.starts_with("contract:session:")
            || k.starts_with("contract:principal:")
            || k == "contract:events"));
}

/// `store.near_cache` changes nothing a single store can observe: its own writes are read
/// back at once (tests/near_cache.rs covers writes made elsewhere).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_with_near_cache_meets_the_contract() {
    let redis = RedisServer::start();
    let near = StoreSettings {
        near_cache: Some(NearCacheSettings { max_sessions: 1000 }),
        ..settings(&redis.url())
    };
    contract(Store::open(&near).expect("open")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_store_with_near_cache_meets_the_contract() {
    let set = SentinelSet::start();
    let near = StoreSettings {
        near_cache: Some(NearCacheSettings { max_sessions: 1000 }),
        ..settings(&set.url())
    };
    contract(Store::open(&near).expect("open")).await;
}
