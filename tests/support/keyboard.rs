//! Typing on a QEMU machine's keyboard through QMP `send-key`, and waiting
//! for the machine's QMP events (`RESET`, `SHUTDOWN`).

use hiperiso_runtime::qmp::Qmp;
use serde_json::{Value, json};
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

/// The QMP session of the QEMU `child` just started, listening on `socket`
/// once it runs (kills it and panics after 30 s).
pub fn connect_qmp(child: &mut Child, socket: &Path) -> Qmp {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match Qmp::connect(socket, Duration::from_secs(10)) {
            Ok(qmp) => return qmp,
            Err(e) if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("QMP at {}: {e}", socket.display())
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// The QEMU key codes (qcodes) that type `c` on a US keyboard, `shift`
/// first when it needs one.
pub fn qcodes(c: char) -> Vec<String> {
    const SHIFTED: &[(char, &str)] = &[
        ('!', "1"),
        ('@', "2"),
        ('#', "3"),
        ('$', "4"),
        ('%', "5"),
        ('^', "6"),
        ('&', "7"),
        ('*', "8"),
        ('(', "9"),
        (')', "0"),
        ('_', "minus"),
        ('+', "equal"),
        (':', "semicolon"),
        ('"', "apostrophe"),
        ('<', "comma"),
        ('>', "dot"),
        ('?', "slash"),
        ('|', "backslash"),
        ('~', "grave_accent"),
        ('{', "bracket_left"),
        ('}', "bracket_right"),
    ];
    const PLAIN: &[(char, &str)] = &[
        (' ', "spc"),
        ('\n', "ret"),
        ('-', "minus"),
        ('=', "equal"),
        (';', "semicolon"),
        ('\'', "apostrophe"),
        (',', "comma"),
        ('.', "dot"),
        ('/', "slash"),
        ('\\', "backslash"),
        ('`', "grave_accent"),
        ('[', "bracket_left"),
        (']', "bracket_right"),
    ];
    let key = |k: &str| vec![k.to_string()];
    if c.is_ascii_lowercase() || c.is_ascii_digit() {
        key(&c.to_string())
    } else if c.is_ascii_uppercase() {
        vec!["shift".into(), c.to_ascii_lowercase().to_string()]
    } else if let Some((_, k)) = SHIFTED.iter().find(|(s, _)| *s == c) {
        vec!["shift".into(), k.to_string()]
    } else if let Some((_, k)) = PLAIN.iter().find(|(p, _)| *p == c) {
        key(k)
    } else {
        panic!("no key types {c:?}")
    }
}

/// Press `keys` together (e.g. `["shift", "4"]`), then release them.
pub fn press(qmp: &mut Qmp, keys: &[&str]) {
    let keys: Vec<Value> = keys
        .iter()
        .map(|k| json!({"type": "qcode", "data": k}))
        .collect();
    qmp.execute("send-key", Some(json!({ "keys": keys })))
        .unwrap_or_else(|e| panic!("send-key {keys:?}: {e}"));
    // Released after send-key's 100 ms hold; the next key comes after it.
    std::thread::sleep(Duration::from_millis(150));
}

/// Type `text` key by key.
pub fn type_text(qmp: &mut Qmp, text: &str) {
    for c in text.chars() {
        let codes = qcodes(c);
        let codes: Vec<&str> = codes.iter().map(String::as_str).collect();
        press(qmp, &codes);
    }
}

/// The first QMP event named `name` (received now or within `timeout`),
/// removed from the queue; panics naming the events seen instead.
pub fn wait_event(qmp: &mut Qmp, name: &str, timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(at) = qmp.events.iter().position(|e| e["event"] == name) {
            return qmp.events.remove(at);
        }
        assert!(
            Instant::now() < deadline,
            "no {name} event within {timeout:?}; events: {:?}",
            qmp.events
        );
        if let Err(e) = qmp.poll_events(Duration::from_millis(500)) {
            panic!(
                "QMP while waiting for {name}: {e}; events: {:?}",
                qmp.events
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::qcodes;

    #[test]
    fn characters_map_to_qcodes() {
        assert_eq!(qcodes('e'), ["e"]);
        assert_eq!(qcodes('E'), ["shift", "e"]);
        assert_eq!(qcodes('$'), ["shift", "4"]);
        assert_eq!(qcodes('>'), ["shift", "dot"]);
        assert_eq!(qcodes('/'), ["slash"]);
        assert_eq!(qcodes('\n'), ["ret"]);
    }
}
