//! Gives the start-up's code pages back. Loading the eBPF programs (BTF
//! parsing, relocation), parsing the configuration (LALRPOP tables) and the
//! first lookups run code that an idle daemon never runs again, and the pages
//! it touched stay in the process's resident set: about 6 of the 8 MiB of
//! file-backed RSS measured at 50 services (`docs/performance.md`). Once the
//! start-up or a reload has settled, the daemon drops its clean, private,
//! read-only file pages from its page tables (`madvise(MADV_DONTNEED)`): they
//! stay in the page cache, and what runs again faults back in from it, so the
//! resident set becomes what the daemon actually uses. Never a page that is not
//! the file's own: a mapping with anonymous (copy-on-write) pages, such as the
//! relocated RELRO data, or a writable one, is left alone.

use std::io;

/// One mapping of `/proc/self/smaps` worth releasing.
#[derive(Debug, PartialEq, Eq)]
struct Mapping {
    start: usize,
    end: usize,
    rss_kib: u64,
}

/// The mappings of `smaps` whose pages are all their file's own: private, not
/// writable, backed by a path, with no anonymous (copy-on-write) pages.
fn releasable(smaps: &str) -> Vec<Mapping> {
    let mut out = Vec::new();
    let mut current: Option<(Mapping, bool)> = None;
    let finish = |current: &mut Option<(Mapping, bool)>, out: &mut Vec<Mapping>| {
        if let Some((mapping, true)) = current.take()
            && mapping.rss_kib > 0
        {
            out.push(mapping);
        }
    };
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let Some(first) = words.next() else { continue };
        if let Some((start, end)) = first.split_once('-')
            && let (Ok(start), Ok(end)) = (usize::from_str_radix(start, 16), usize::from_str_radix(end, 16))
        {
            finish(&mut current, &mut out);
            let perms = words.next().unwrap_or("");
            let path = words.nth(3).unwrap_or("");
            let clean_copy = perms.len() == 4
                && perms.starts_with('r')
                && &perms[1..2] == "-"
                && perms.ends_with('p')
                && path.starts_with('/');
            current = Some((Mapping { start, end, rss_kib: 0 }, clean_copy));
            continue;
        }
        let Some((mapping, ok)) = current.as_mut() else { continue };
        let kib = words.next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        match first {
            "Rss:" => mapping.rss_kib = kib,
            // A dirty page of the file's page cache (written, not yet flushed: a
            // binary just built) is still the file's; only a copy-on-write copy is not.
            "Anonymous:" | "Swap:" if kib > 0 => *ok = false,
            _ => {}
        }
    }
    finish(&mut current, &mut out);
    out
}

/// Drops this process's clean file pages; returns the KiB they held. Blocking
/// (it reads `/proc/self/smaps`): run it off the loop.
pub fn release_clean_file_pages() -> io::Result<u64> {
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    let mut released = 0;
    for mapping in releasable(&smaps) {
        // SAFETY: the range is a whole mapping of this process that holds only
        // unmodified pages of its file (checked above, from the kernel's own
        // accounting); MADV_DONTNEED on a private file mapping makes the next
        // access read the file's page again, which is the same content.
        let rc = unsafe {
            libc::madvise(mapping.start as *mut libc::c_void, mapping.end - mapping.start, libc::MADV_DONTNEED)
        };
        if rc == 0 {
            released += mapping.rss_kib;
        }
    }
    Ok(released)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55ab153f7000-55ab15917000 r--p 00000000 fe:00 5319494                    /usr/sbin/inspeqd
Size:               5248 kB
Rss:                1828 kB
Private_Dirty:         0 kB
Anonymous:             0 kB
Swap:                  0 kB
55ab15917000-55ab16384000 r-xp 0051f000 fe:00 5319494                    /usr/sbin/inspeqd
Rss:                4112 kB
Shared_Dirty:       4108 kB
Private_Dirty:         4 kB
Anonymous:             0 kB
55ab16384000-55ab16410000 r--p 00f8b000 fe:00 5319494                    /usr/sbin/inspeqd
Rss:                 560 kB
Private_Dirty:       560 kB
Anonymous:           560 kB
55ab16410000-55ab16413000 rw-p 01016000 fe:00 5319494                    /usr/sbin/inspeqd
Rss:                  12 kB
Anonymous:            12 kB
55ab3e748000-55ab3e92e000 rw-p 00000000 00:00 0                          [heap]
Rss:                1752 kB
7faddb182000-7faddb2d8000 r-xp 00026000 fe:00 326279                     /usr/lib/x86_64-linux-gnu/libc.so.6
Rss:                 888 kB
Anonymous:             0 kB
7fadd0000000-7fadd0001000 r--p 00000000 00:0f 1061                       anon_inode:bpf-map
Rss:                   4 kB
7fadd1000000-7fadd1001000 r--p 00000000 fe:00 77                         /usr/lib/locale/C.utf8/LC_CTYPE
Rss:                   0 kB
";

    #[test]
    fn only_clean_private_read_only_file_pages_are_released() {
        let got: Vec<(usize, u64)> = releasable(SMAPS).iter().map(|m| (m.start, m.rss_kib)).collect();
        // Text and read-only data of the binary, libc's text; never the relocated
        // RELRO data (copy-on-write), writable data, the heap, a bpf map, or an
        // unmapped-in file.
        assert_eq!(got, [(0x55ab153f7000, 1828), (0x55ab15917000, 4112), (0x7faddb182000, 888)]);
    }

    #[test]
    fn this_process_runs_on_after_its_own_release() {
        let released = release_clean_file_pages().unwrap();
        assert!(released > 0, "a test binary has clean text pages resident");
        // Its code and read-only data fault back in from the file: the same parse, the same answer.
        assert_eq!(releasable(SMAPS).len(), 3);
    }
}
