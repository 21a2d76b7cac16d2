//! `session::sealing` on arbitrary stored values: what someone with write access to Redis
//! could put in a session hash. Opening must never panic, and nothing but a value this key
//! sealed for this session and attribute may open (the input is the stored value).

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use stickless::session::id::SessionId;
use stickless::session::record::Record;
use stickless::session::sealing::{open_record, Sealer};

fn fixture() -> &'static (Sealer, SessionId) {
    static FIXTURE: OnceLock<(Sealer, SessionId)> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let sealer = Sealer::new(&[vec![7u8; 32], vec![9u8; 32]]).expect("sealer");
        let id = SessionId::parse(&[b'A'; SessionId::LEN]).expect("id");
        (sealer, id)
    })
}

fuzz_target!(|data: &[u8]| {
    let (sealer, id) = fixture();
    // Random bytes never authenticate (a forgery would need the key).
    assert_eq!(sealer.open(id, "user", data), None);
    let mut record = Record::new(1);
    record
        .attributes
        .insert("user".into(), bytes::Bytes::copy_from_slice(data));
    assert!(open_record(Some(sealer), id, record.clone()).is_err());
    // Without keys, a value is either plain (kept as it is) or sealed (refused).
    match open_record(None, id, record.clone()) {
        Ok(opened) => assert_eq!(opened, record),
        Err(_) => assert!(data.starts_with(&[0, 1])),
    }
    // And a value sealed here opens to exactly what went in.
    let sealed = sealer.seal(id, "user", data).expect("seal");
    assert_eq!(sealer.open(id, "user", &sealed).as_deref(), Some(data));
});
