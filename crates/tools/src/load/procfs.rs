//! What `/proc` says about a process: CPU time and resident memory (for the
//! server's CPU% and RSS, and this generator's own), and datagrams the
//! kernel dropped on UDP sockets (to tell a slow generator from a slow
//! server).

use std::collections::HashSet;

/// Linux reports CPU time in clock ticks of `USER_HZ`, which is 100 on every
/// architecture the kernel still builds for (reading it would need
/// `sysconf`, an unsafe libc call, for a constant).
const CLOCK_TICKS_PER_SEC: f64 = 100.0;

/// CPU time and resident memory of a process at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcSample {
    /// User plus system CPU time, in clock ticks.
    pub cpu_ticks: u64,
    /// Resident set size, KiB.
    pub rss_kib: u64,
}

impl ProcSample {
    /// Reads `/proc/PID/stat` and `/proc/PID/status`; `None` when the
    /// process is gone or the files do not parse.
    pub fn read(pid: u32) -> Option<Self> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        Some(Self {
            cpu_ticks: parse_stat_cpu_ticks(&stat)?,
            rss_kib: parse_status_rss_kib(&status)?,
        })
    }

    /// CPU seconds between two samples.
    pub fn cpu_secs_since(&self, earlier: &ProcSample) -> f64 {
        self.cpu_ticks.saturating_sub(earlier.cpu_ticks) as f64 / CLOCK_TICKS_PER_SEC
    }
}

/// utime + stime (fields 14 and 15) of `/proc/PID/stat`. The command name
/// (field 2) may hold spaces and parentheses, so fields are counted from the
/// last `)`.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // `rest` starts at field 3 (state); utime is field 14.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// `VmRSS` of `/proc/PID/status`, in KiB.
pub fn parse_status_rss_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Sums the `drops` column of `/proc/PID/net/udp` over the UDP sockets
/// process `pid` holds (found by inode through `/proc/PID/fd`). `None`
/// when the files cannot be read (another user's process, gone).
pub fn process_udp_drops(pid: u32) -> Option<u64> {
    let mut inodes = HashSet::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.flatten() {
        if let Ok(target) = std::fs::read_link(entry.path())
            && let Some(inode) = target
                .to_str()
                .and_then(|t| t.strip_prefix("socket:["))
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse::<u64>().ok())
        {
            inodes.insert(inode);
        }
    }
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/udp")).ok()?;
    Some(
        table
            .lines()
            .skip(1)
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let inode: u64 = fields.get(9)?.parse().ok()?;
                inodes
                    .contains(&inode)
                    .then(|| fields.last()?.parse::<u64>().ok())
                    .flatten()
            })
            .sum(),
    )
}

/// Sums the `drops` column of `/proc/net/udp` over sockets bound to
/// 127.0.0.1 on one of `ports`.
pub fn udp_drops_for_ports(table: &str, ports: &[u16]) -> u64 {
    let ports: HashSet<u16> = ports.iter().copied().collect();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (addr, port) = fields.get(1)?.split_once(':')?;
            let port = u16::from_str_radix(port, 16).ok()?;
            // 127.0.0.1 in the kernel's byte order.
            (addr == "0100007F" && ports.contains(&port))
                .then(|| fields.last()?.parse::<u64>().ok())
                .flatten()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let stat = "1234 (lumen (x) y) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 8 0 100 200 300";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(300));
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
        let status = "Name:\tlumen\nVmPeak:\t 1 kB\nVmRSS:\t   45678 kB\n";
        assert_eq!(parse_status_rss_kib(status), Some(45678));
        let me = ProcSample::read(std::process::id()).expect("own /proc");
        assert!(me.rss_kib > 0);
    }

    #[test]
    fn reads_drops_from_proc_net_udp() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  1: 0100007F:465A 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 0000000000000000 1764
  2: 0100007F:CC0D 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 3 2 0000000000000000 19
  3: 00000000:CC0E 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4 2 0000000000000000 5
";
        assert_eq!(udp_drops_for_ports(table, &[0xCC0D, 0xCC0E]), 19);
        assert_eq!(udp_drops_for_ports(table, &[0x465A, 0xCC0D]), 1783);
        assert_eq!(udp_drops_for_ports("garbage", &[1]), 0);
    }

    #[test]
    fn counts_drops_on_own_udp_sockets() {
        let pid = std::process::id();
        let before = process_udp_drops(pid).expect("own /proc");
        // A socket nobody reads, flooded past its receive buffer: the kernel
        // drops, and the drops show up against this process. (Other tests
        // may open and close sockets meanwhile; their drops are ~0, these are
        // in the thousands.)
        let sink = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind sink");
        let to = sink.local_addr().expect("sink addr");
        let source = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind source");
        let payload = [0u8; 1200];
        for _ in 0..5_000 {
            let _ = source.send_to(&payload, to);
        }
        let after = process_udp_drops(pid).expect("own /proc");
        assert!(after >= before + 1_000, "drops {before} -> {after}");
        drop(sink);
    }
}
