//! The client-gateway frame codec: any bytes decode to a frame or an error, and a decoded frame re-encodes to a
//! frame that decodes to itself.
#![no_main]

use coffee_engine::protocol::{decode, encode, ClientFrame, GatewayFrame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = decode::<ClientFrame>(data) {
        assert_eq!(decode::<ClientFrame>(&encode(&frame)).ok(), Some(frame));
    }
    if let Ok(frame) = decode::<GatewayFrame>(data) {
        assert_eq!(decode::<GatewayFrame>(&encode(&frame)).ok(), Some(frame));
    }
});
