//! WebSocket upgrade requests, in reads of any size, through the Socket's
//! own handshake parser.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, bytes)) = data.split_first() else {
        return;
    };
    wharf_socket::fuzzing::websocket_upgrade(bytes, usize::from(chunk) + 1);
});
