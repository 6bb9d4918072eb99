//! Runs the shared conformance suite against the embedded backends (filesystem, in-process).

mod conformance;
use cloudpop::lock::memory::MemoryLocks;
use cloudpop::store::fs::FsStore;

async fn fs_store() -> (tempfile::TempDir, FsStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path()).await.unwrap();
    (dir, store)
}

macro_rules! fs_cases {
    ($($case:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $case() {
            let (_dir, store) = fs_store().await;
            conformance::$case(&store).await;
        }
    )*};
}

mod fs {
    use super::*;
    fs_cases!(
        messages_round_trip,
        uncommitted_messages_are_invisible,
        ids_are_unique_ordered_and_well_formed,
        removal,
        maildrops_are_isolated,
        large_messages_stream,
        accounts,
    );
}

mod memory_locks {
    use super::*;

    #[tokio::test]
    async fn locks_are_exclusive_leases() {
        conformance::locks_are_exclusive_leases(&MemoryLocks::new()).await;
    }

    #[tokio::test]
    async fn expired_leases_free_themselves() {
        conformance::expired_leases_free_themselves(&MemoryLocks::new()).await;
    }
}
