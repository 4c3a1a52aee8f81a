//! Tracepoint field offsets from tracefs `format` files. Layouts change between
//! kernels (`sched_process_fork` moved to `__data_loc` comms in 6.x), so offsets are
//! read at load time rather than compiled in.

use std::path::{Path, PathBuf};

/// Why a field offset could not be found.
#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    #[error("tracefs is not mounted (tried /sys/kernel/tracing and /sys/kernel/debug/tracing)")]
    NotMounted,
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("tracepoint {category}:{name} has no field `{field}`")]
    NoField { category: String, name: String, field: String },
}

/// The mounted tracefs root, mounting it at `/sys/kernel/tracing` if it is not
/// there yet (aya finds tracepoint ids through it as well).
pub fn root() -> Result<PathBuf, TracefsError> {
    for dir in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
        if Path::new(dir).join("events").is_dir() {
            return Ok(PathBuf::from(dir));
        }
    }
    let target = c"/sys/kernel/tracing";
    // SAFETY: valid NUL-terminated strings; a failure is reported through the return value.
    let rc = unsafe { libc::mount(c"tracefs".as_ptr(), target.as_ptr(), c"tracefs".as_ptr(), 0, std::ptr::null()) };
    if rc == 0 && Path::new("/sys/kernel/tracing/events").is_dir() {
        return Ok(PathBuf::from("/sys/kernel/tracing"));
    }
    Err(TracefsError::NotMounted)
}

/// The byte offset of `field` in the `format` text of a tracepoint.
pub fn field_offset_in(format: &str, field: &str) -> Option<u32> {
    format.lines().find_map(|line| {
        let line = line.trim();
        let decl = line.strip_prefix("field:")?.split(';').next()?;
        // The name is the declaration's last word, minus an array suffix.
        let name = decl.rsplit([' ', '\t']).next()?;
        let name = name.split('[').next()?;
        if name != field {
            return None;
        }
        let offset = line.split(';').find_map(|part| part.trim().strip_prefix("offset:"))?;
        offset.trim().parse().ok()
    })
}

/// The byte offset of `field` in tracepoint `category:name`.
pub fn field_offset(root: &Path, category: &str, name: &str, field: &str) -> Result<u32, TracefsError> {
    let path = root.join("events").join(category).join(name).join("format");
    let format = std::fs::read_to_string(&path).map_err(|source| TracefsError::Read { path, source })?;
    field_offset_in(&format, field).ok_or_else(|| TracefsError::NoField {
        category: category.to_owned(),
        name: name.to_owned(),
        field: field.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::field_offset_in;

    const FORK_6_18: &str = "name: sched_process_fork\nID: 300\nformat:\n\
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n\
\tfield:__data_loc char[] parent_comm;\toffset:8;\tsize:4;\tsigned:0;\n\
\tfield:pid_t parent_pid;\toffset:12;\tsize:4;\tsigned:1;\n\
\tfield:__data_loc char[] child_comm;\toffset:16;\tsize:4;\tsigned:0;\n\
\tfield:pid_t child_pid;\toffset:20;\tsize:4;\tsigned:1;\n";

    const FORK_5_10: &str = "\tfield:char parent_comm[16];\toffset:8;\tsize:16;\tsigned:1;\n\
\tfield:pid_t parent_pid;\toffset:24;\tsize:4;\tsigned:1;\n\
\tfield:char child_comm[16];\toffset:28;\tsize:16;\tsigned:1;\n\
\tfield:pid_t child_pid;\toffset:44;\tsize:4;\tsigned:1;\n";

    // `sock:inet_sock_set_state` on the reference VM (6.18); 5.10 to 7.2 have the same offsets.
    const SOCK_STATE_6_18: &str = "name: inet_sock_set_state\nID: 2287\nformat:\n\
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n\
\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;\n\
\tfield:int oldstate;\toffset:16;\tsize:4;\tsigned:1;\n\
\tfield:int newstate;\toffset:20;\tsize:4;\tsigned:1;\n\
\tfield:__u16 sport;\toffset:24;\tsize:2;\tsigned:0;\n\
\tfield:__u16 dport;\toffset:26;\tsize:2;\tsigned:0;\n\
\tfield:__u16 family;\toffset:28;\tsize:2;\tsigned:0;\n\
\tfield:__u16 protocol;\toffset:30;\tsize:2;\tsigned:0;\n\
\tfield:__u8 saddr[4];\toffset:32;\tsize:4;\tsigned:0;\n\
\tfield:__u8 daddr[4];\toffset:36;\tsize:4;\tsigned:0;\n\
\tfield:__u8 saddr_v6[16];\toffset:40;\tsize:16;\tsigned:0;\n\
\tfield:__u8 daddr_v6[16];\toffset:56;\tsize:16;\tsigned:0;\n";

    #[test]
    fn reads_the_socket_state_fields() {
        let offsets: Vec<Option<u32>> = ["oldstate", "newstate", "sport", "family", "protocol", "saddr", "saddr_v6"]
            .iter()
            .map(|f| field_offset_in(SOCK_STATE_6_18, f))
            .collect();
        assert_eq!(offsets, [16, 20, 24, 28, 30, 32, 40].map(Some));
    }

    #[test]
    fn reads_offsets_of_both_layouts() {
        assert_eq!(field_offset_in(FORK_6_18, "child_pid"), Some(20));
        assert_eq!(field_offset_in(FORK_6_18, "parent_comm"), Some(8));
        assert_eq!(field_offset_in(FORK_5_10, "child_pid"), Some(44));
        assert_eq!(field_offset_in(FORK_5_10, "child_comm"), Some(28));
        assert_eq!(field_offset_in(FORK_5_10, "pid"), None);
    }
}
