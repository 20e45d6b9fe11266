//! Inter-stage messages: any bytes decode to an envelope or an error, and a decoded envelope round-trips.
#![no_main]

use coffee_model::wire::Envelope;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(envelope) = Envelope::decode(data) {
        assert_eq!(Envelope::decode(&envelope.encode()).ok(), Some(envelope));
    }
});
