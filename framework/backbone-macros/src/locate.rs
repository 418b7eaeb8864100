//! Finding the `.avsc` an `#[avro(schema = "…")]` names.

use std::path::{Path, PathBuf};

/// Where the derive is expanded: the crate being compiled, and the source file the derive is in.
pub(crate) struct Origin {
    /// `CARGO_MANIFEST_DIR`.
    pub(crate) manifest_dir: Option<PathBuf>,
    /// The source file the derive is written in, absolute, if rustc knows it.
    pub(crate) source_file: Option<PathBuf>,
}

impl Origin {
    /// The current expansion's origin.
    pub(crate) fn current() -> Self {
        let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from);
        let source_file = proc_macro::Span::call_site().local_file().map(|file| {
            if file.is_absolute() {
                file
            } else {
                // Relative to rustc's working directory, which is the macro's.
                std::env::current_dir().map(|cwd| cwd.join(&file)).unwrap_or(file)
            }
        });
        Self { manifest_dir, source_file }
    }

    /// The directories searched first: the crate's directory (`CARGO_MANIFEST_DIR`), then the
    /// directory of the package holding the source file (the nearest `Cargo.toml` above it). The
    /// two are the same except where the file is compiled as part of another crate: trybuild
    /// compiles `tests/…/*.rs` in a crate of its own under `target/tests/trybuild/`.
    fn roots(&self) -> Vec<PathBuf> {
        let source_package = self.source_file.as_deref().and_then(|file| {
            file.ancestors().skip(1).find(|dir| dir.join("Cargo.toml").is_file()).map(Path::to_path_buf)
        });
        let mut roots: Vec<PathBuf> = self.manifest_dir.iter().cloned().collect();
        roots.extend(source_package.filter(|p| !roots.contains(p)));
        roots
    }

    /// Every directory `relative` is looked up in, in order: the roots, then their parents, nearest
    /// first (so workspace-relative paths work from any crate).
    fn bases(&self) -> Vec<PathBuf> {
        let roots = self.roots();
        let mut bases = roots.clone();
        for dir in roots.iter().flat_map(|root| root.ancestors().skip(1)) {
            if !bases.iter().any(|b| b == dir) {
                bases.push(dir.to_path_buf());
            }
        }
        bases
    }

    /// Finds `relative` (or takes it as is if absolute); on failure, says where it looked.
    pub(crate) fn find(&self, relative: &str) -> Result<PathBuf, String> {
        let wanted = Path::new(relative);
        if wanted.is_absolute() {
            return if wanted.is_file() {
                Ok(wanted.to_path_buf())
            } else {
                Err(format!("file not found: {relative}"))
            };
        }
        if let Some(found) = self.bases().iter().map(|base| base.join(wanted)).find(|p| p.is_file()) {
            return Ok(found);
        }
        let roots: Vec<String> = self.roots().iter().map(|root| with_slash(root)).collect();
        let looked_in = match roots.as_slice() {
            [] => "nowhere: neither CARGO_MANIFEST_DIR nor the source file's path is known".to_owned(),
            [one] => format!("{one} and its parent directories"),
            many => format!("{} and their parent directories", many.join(", ")),
        };
        Err(format!("file not found: {relative} (looked in {looked_in})"))
    }
}

/// A directory as text with a trailing separator (trybuild rewrites known directories written so).
fn with_slash(dir: &Path) -> String {
    let mut text = dir.display().to_string();
    if !text.ends_with(std::path::MAIN_SEPARATOR) {
        text.push(std::path::MAIN_SEPARATOR);
    }
    text
}
