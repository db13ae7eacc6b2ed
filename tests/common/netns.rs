//! A private network namespace for a test, held by a sleeping process;
//! gone when dropped with it.

use std::process::Command;
use std::time::Duration;

use super::Proc;
use super::page::in_netns;

pub struct Netns {
    holder: Proc,
}

impl Netns {
    pub fn new(name: &str) -> Netns {
        let mut holder = Proc::spawn(name, Command::new("unshare").args(["-n", "sleep", "3600"]));
        std::thread::sleep(Duration::from_millis(100));
        assert!(holder.is_running(), "unshare -n failed (needs root): {:?}", holder.lines());
        let netns = Netns { holder };
        netns.ip(&["link", "set", "lo", "up"]);
        netns
    }

    pub fn pid(&self) -> u32 {
        self.holder.pid()
    }

    pub fn ip(&self, args: &[&str]) {
        let out = in_netns(Some(self.pid()), "ip").args(args).output().expect("run ip (iproute2)");
        assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    }

    /// Prohibits UDP to 127.0.0.1 (all the media here), keeps TCP (signaling).
    pub fn break_udp(&self) {
        self.ip(&["rule", "add", "pref", "10", "to", "127.0.0.1", "ipproto", "udp", "prohibit"]);
    }

    pub fn restore_udp(&self) {
        self.ip(&["rule", "del", "pref", "10"]);
    }

    /// `tc ARGS` inside the namespace; its output.
    pub fn tc(&self, args: &[&str]) -> String {
        let out = in_netns(Some(self.pid()), "tc").args(args).output().expect("run tc (iproute2)");
        assert!(out.status.success(), "tc {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}
