//! The cluster transport's handshake, from both ends, against a stranger who sends any bytes:
//! the acceptor's side (the stranger dials) and the dialer's side (the stranger answers).
//! A stranger does not know the cookie, so no input may complete a handshake; none may panic
//! or hang either.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use runtime::handshake::{DEFAULT_COOKIE, accept, dial, handshake_codec};
use runtime::{NodeAddress, UniqueAddress};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::Framed;

fuzz_target!(|data: &[u8]| {
    let Some((&side, stranger)) = data.split_first() else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (ours, mut theirs) = tokio::io::duplex(64 * 1024);
        let me = UniqueAddress {
            address: NodeAddress::new("AkkaTrader", "127.0.0.1", 4053),
            uid: 7,
        };
        let peer = NodeAddress::new("AkkaTrader", "127.0.0.1", 5055);
        let shake = async move {
            let mut io = Framed::new(ours, handshake_codec());
            let timeout = Duration::from_secs(2);
            if side & 1 == 0 {
                accept(&mut io, &me, DEFAULT_COOKIE, timeout, |_| Ok(()))
                    .await
                    .map(|_| ())
            } else {
                dial(&mut io, &me, &peer, DEFAULT_COOKIE, timeout)
                    .await
                    .map(|_| ())
            }
        };
        let stranger = async move {
            let _ = theirs.write_all(stranger).await;
            let _ = theirs.shutdown().await;
            let mut sink = Vec::new();
            let _ = theirs.read_to_end(&mut sink).await;
        };
        let (result, ()) = tokio::join!(shake, stranger);
        assert!(
            result.is_err(),
            "a stranger without the cookie completed a handshake"
        );
    });
});
