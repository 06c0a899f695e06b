//! mesh-control's manifests backend: one YAML file (several documents)
//! into index objects, then into the index, as a directory reload does.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use mesh_control::discovery::manifests::parse_file;
use mesh_index::model::Change;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match parse_file(Path::new("fuzz.yaml"), text) {
        Ok(resources) => {
            let index = mesh_index::Index::new(Default::default());
            index.apply(resources.into_iter().map(Change::Upsert));
            let _ = index.stats();
        }
        Err(errors) => {
            assert!(!errors.is_empty());
            for e in errors {
                let message = e.to_string();
                assert!(message.starts_with("fuzz.yaml:"), "{message}");
            }
        }
    }
});
