//! Read-only views (`.at` time travel, read-only snapshots) read the tree at their point
//! only: buffered writes of the live file — which shares the view's branch — never show
//! through them.

use super::*;
use crate::chunker::ChunkParams;
use crate::kv::mem::MemKv;

#[test]
fn a_time_travel_view_does_not_show_the_live_files_buffered_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        Store::open_with_kv(dir.path(), ChunkParams::default(), Arc::new(MemKv::new())).unwrap(),
    );
    let fs = Fs::new(
        store,
        FsOptions {
            background: false,
            ..Default::default()
        },
    );
    let root = Ctx::root();
    let c = fs.mkdir(&root, ROOT_NODE, b"c", 0o755).unwrap().node;
    let (a, fh) = fs
        .create(&root, c, b"f", 0o644, OpenFlags::read_write())
        .unwrap();
    fs.write(a.node, fh, 0, b"base").unwrap();
    fs.fsync(a.node, fh, false).unwrap();
    // Buffered, not committed (no background flusher in this test).
    fs.write(a.node, fh, 0, b"later").unwrap();

    let at = fs.lookup(&root, ROOT_NODE, b".at").unwrap().node;
    let at_c = fs.lookup(&root, at, b"c").unwrap().node;
    let now = fs.lookup(&root, at_c, b"now").unwrap().node;
    let old = fs.lookup(&root, now, b"f").unwrap();
    assert_eq!(old.size, 4, "the view's size is the committed one");
    assert_eq!(fs.getattr(old.node).unwrap().size, 4);
    let rfh = fs.open(&root, old.node, OpenFlags::read_only()).unwrap();
    assert_eq!(fs.read(old.node, rfh, 0, 100).unwrap(), b"base");
    fs.release(rfh).unwrap();
    // The live file still has its buffered bytes.
    assert_eq!(fs.read(a.node, fh, 0, 100).unwrap(), b"later");
    fs.release(fh).unwrap();
}
