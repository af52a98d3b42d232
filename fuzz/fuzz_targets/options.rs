//! `set()` on the server and the client must either accept an array or
//! reject it with an error, never panic, whatever keys and values it holds;
//! a rejected call must leave the configuration unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use taskq_engine::config::{ClientConfig, ServerConfig};
use taskq_value::Value;

/// Turns bytes into (key, value) pairs: each entry is a key-selector byte,
/// a type byte and a few value bytes, so the fuzzer reaches every option.
fn entries(data: &[u8], known: &[&str]) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for chunk in data.chunks(10) {
        if chunk.len() < 2 {
            break;
        }
        let key = match known.get(chunk[0] as usize) {
            Some(k) => (*k).to_owned(),
            None => String::from_utf8_lossy(&chunk[2..]).into_owned(),
        };
        let raw = &chunk[2..];
        let mut n = [0u8; 8];
        n[..raw.len().min(8)].copy_from_slice(&raw[..raw.len().min(8)]);
        let int = i64::from_le_bytes(n);
        let value = match chunk[1] % 8 {
            0 => Value::Null,
            1 => Value::Bool(int & 1 == 1),
            2 => Value::Int(int),
            3 => Value::Int(int % 100),
            4 => Value::Float(f64::from_bits(int as u64)),
            5 => Value::Bytes(raw.to_vec()),
            6 => Value::List(vec![Value::Int(int)]),
            _ => Value::Map(vec![(key.clone(), Value::Int(int))]),
        };
        out.push((key, value));
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let mut server = ServerConfig::new(2);
    let before = server.clone();
    match server.apply(&entries(data, ServerConfig::known_options())) {
        Ok(_) => assert!(server.worker_num >= 1 && server.packet.max_length >= 65536),
        Err(_) => assert_eq!(server, before),
    }
    let mut client = ClientConfig::new();
    let before = client.clone();
    if client.apply(&entries(data, ClientConfig::known_options())).is_err() {
        assert_eq!(client, before);
    }
});
