//! WebSocket frames of `/v1/ws` devices (RFC 6455, client to server),
//! arriving in reads of any size, through the Socket's own decoder.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&[mode, chunk], bytes)) = data.split_first_chunk::<2>() else {
        return;
    };
    let max = if mode & 1 == 0 {
        256 * 1024
    } else {
        16 + usize::from(chunk)
    };
    wharf_socket::fuzzing::websocket_frames(bytes, usize::from(chunk) + 1, max);
});
