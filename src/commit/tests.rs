//! Versions, allocators and counters across reopen; the timeline.

use super::*;
use crate::kv::mem::MemKv;

#[test]
fn versions_allocators_and_counters_persist() {
    let kv: Arc<dyn Kv> = Arc::new(MemKv::new());
    let c = Committer::open(kv.clone(), Arc::new(crate::clock::SystemTime::default())).unwrap();
    assert_eq!(c.head(), Version(0));
    let ino = c
        .commit(|cm| {
            cm.txn.put(Cf::Meta, b"x".to_vec(), b"1".to_vec());
            cm.container_counters(ContainerId(3)).chunks += 2;
            Ok::<_, KvError>(cm.alloc_ino())
        })
        .unwrap();
    assert_eq!(ino, Ino(FIRST_INO));
    assert_eq!(c.head(), Version(1));
    // a failing closure leaves nothing behind
    let r: Result<(), KvError> = c.commit(|cm| {
        cm.alloc_ino();
        cm.txn.put(Cf::Meta, b"y".to_vec(), b"1".to_vec());
        Err(KvError::Backend("no".into()))
    });
    assert!(r.is_err());
    assert_eq!(kv.get(Cf::Meta, b"y").unwrap(), None);
    // an empty closure does not consume a version
    c.commit(|_| Ok::<_, KvError>(())).unwrap();
    assert_eq!(c.head(), Version(1));

    let c2 = Committer::open(kv.clone(), Arc::new(crate::clock::SystemTime::default())).unwrap();
    assert_eq!(c2.head(), Version(1));
    assert_eq!(c2.container_counters(ContainerId(3)).chunks, 2);
    let ino2 = c2.commit(|cm| Ok::<_, KvError>(cm.alloc_ino())).unwrap();
    assert_eq!(
        ino2,
        Ino(FIRST_INO + 1 + INO_BLOCK),
        "allocator survived reopen: it goes on above its persisted watermark"
    );
    // Within a block, allocations persist nothing of the allocator.
    let before = kv.get(Cf::Meta, &MetaKey::NextIno.encode()).unwrap();
    c2.commit(|cm| {
        cm.alloc_ino();
        cm.txn.put(Cf::Meta, b"z".to_vec(), b"1".to_vec());
        Ok::<_, KvError>(())
    })
    .unwrap();
    assert_eq!(
        kv.get(Cf::Meta, &MetaKey::NextIno.encode()).unwrap(),
        before
    );
    let t = Timestamp::now();
    assert_eq!(c2.version_at(t).unwrap(), Some(Version(3)));
    assert_eq!(c2.version_at(Timestamp { sec: 0, nsec: 0 }).unwrap(), None);
}
