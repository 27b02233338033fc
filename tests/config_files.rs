//! Every configuration shipped under conf/ parses and resolves, and the binary rejects bad
//! ones with exit status 3 and the place of the mistake.

mod common;

use std::path::Path;

use s3nap::config::Config;

#[test]
fn every_configuration_under_conf_parses() {
    let conf = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf");
    let mut checked = 0;
    for entry in std::fs::read_dir(&conf).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".conf") || name.ends_with(".conf.example") {
            let config = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
            assert!(!config.sets.is_empty(), "{name} configures no set");
            checked += 1;
        }
    }
    assert!(
        checked >= 1,
        "no configuration found under {}",
        conf.display()
    );
}

#[test]
fn mistakes_exit_3_naming_file_line_and_column() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        (
            "Bucket b\nDiffDir /d\nFrequncy 2\n",
            "3:1",
            "unknown directive 'Frequncy'",
        ),
        (
            "Bucket b\nDiffDir /d\n<Cycle x>\nDirectory /a\n",
            "3:2",
            "never closed",
        ),
        ("Bucket b\nDiffDir /d\nDiffs -1\n", "3:7", "whole number"),
        (
            "Bucket b\nDiffDir /d\nDirectory /a\n<Cycle y>\n</Cycle>\nDirectory /a\n",
            "6:11",
            "already configured",
        ),
        ("DiffDir /d\n", "1:1", "missing required directive Bucket"),
        (
            "Bucket b\nDiffDir /d\nInclude missing.conf\n",
            "3:9",
            "does not exist",
        ),
        (
            "Bucket b\nDiffDir /d\nFulls 3\nFulls 5\nDirectory /a\n",
            "4:1",
            "Fulls is already set at",
        ),
        (
            "Bucket b\nDiffDir /d\nRun /bin/true\n<Command a>\n</Command>\n",
            "3:1",
            "belongs inside a <Command NAME>",
        ),
        (
            "Bucket b\nDiffDir /d\nRetries 4294967295\nDirectory /a\n",
            "3:9",
            "at most 100",
        ),
        (
            "Bucket b\nDiffDir /d\nChunkSize 1MiB\nDirectory /a\n",
            "3:11",
            "at least 5 MiB",
        ),
        (
            "Bucket b\nDiffDir /d\nMySQLOptions --password=hunter2\nMySQL all\n",
            "3:14",
            "--defaults-extra-file",
        ),
    ];
    for (text, place, needle) in cases {
        let conf = common::write_config(tmp.path(), text);
        let out = common::s3nap(&["-c", conf.to_str().unwrap(), "-t"], &[]);
        let err = common::stderr(&out);
        assert_eq!(out.status.code(), Some(3), "{text:?}: {err}");
        assert!(
            err.contains(&format!("{}:{place}", conf.display())),
            "{text:?}: {err}"
        );
        assert!(err.contains(needle), "{text:?}: {err}");
    }
}

#[test]
fn shipped_log4rs_configuration_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/log4rs.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let raw: log4rs::config::RawConfig = serde_yaml::from_str(&text).unwrap();
    let (appenders, errors) = raw.appenders_lossy(&log4rs::config::Deserializers::default());
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(appenders.len(), 2);
    assert!(text.contains("kind: rolling_file"));
}
