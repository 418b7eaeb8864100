//! `backbone new service NAME`: scaffolds a service crate in the workspace, written the way the
//! guide teaches (its events bound to Avro contracts, a handler, an HTTP route, a real-broker test),
//! that builds and passes its test as generated.

use std::path::{Path, PathBuf};

use clap::Subcommand;

/// What `backbone new` makes.
#[derive(Debug, Subcommand)]
pub(crate) enum NewCommand {
    /// A service crate at `services/NAME` with its contracts in `schemas/NAME/`, added to the
    /// workspace's members.
    Service {
        /// The service's name: 1–63 lower-case letters, digits and '-', starting with a letter and
        /// not ending with '-'.
        name: String,
        /// The workspace (or a directory inside it); default: the current directory.
        #[arg(long, default_value = ".")]
        workspace: PathBuf,
    },
}

/// Why nothing was scaffolded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NewError {
    #[error("`{0}` is not a service name: {rule}", rule = backbone_names::SERVICE_NAME_RULE)]
    BadName(String),
    #[error("no Cargo workspace at or above {0} (a Cargo.toml with [workspace])")]
    NoWorkspace(PathBuf),
    #[error("{0} exists already: nothing was written")]
    Exists(PathBuf),
    #[error("the workspace's Cargo.toml has no `members = [ … ]` list to add `services/{0}` to")]
    NoMembers(String),
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },
}

/// The files written, as (path relative to the workspace, template).
const FILES: &[(&str, &str)] = &[
    ("services/{{name}}/Cargo.toml", include_str!("new_service/Cargo.toml.tmpl")),
    ("services/{{name}}/src/lib.rs", include_str!("new_service/lib.rs.tmpl")),
    ("services/{{name}}/src/main.rs", include_str!("new_service/main.rs.tmpl")),
    ("services/{{name}}/tests/service.rs", include_str!("new_service/service_test.rs.tmpl")),
    ("schemas/{{name}}/name-given-v1.avsc", include_str!("new_service/name-given.avsc.tmpl")),
    ("schemas/{{name}}/greeted-v1.avsc", include_str!("new_service/greeted.avsc.tmpl")),
];

pub(crate) fn run(command: NewCommand) -> Result<(), NewError> {
    match command {
        NewCommand::Service { name, workspace } => {
            let root = scaffold(&name, &workspace)?;
            println!("scaffolded the `{name}` service in {}:", root.display());
            for (path, _) in FILES {
                println!("  {}", fill(path, &name));
            }
            println!("and added `services/{name}` to the workspace's members (and, where this workspace has");
            println!(
                "them, a `{name}` target to its Dockerfile and deploy/k8s/base/{name}.yaml to its kustomization:"
            );
            println!("give it its Kafka credentials in your overlays, as the sample services have). Next:");
            println!(
                "  cargo test -p {name}                      # its test, against a real broker (test kit)"
            );
            println!("  cargo run -p backbone-cli -- dev up       # then, in another terminal:");
            println!("  BACKBONE_PROFILE=development cargo run -p {name}");
            Ok(())
        }
    }
}

/// Writes the service `name` into the workspace at or above `start`; returns the workspace root.
/// Checks everything before writing anything.
pub(crate) fn scaffold(name: &str, start: &Path) -> Result<PathBuf, NewError> {
    if !backbone_names::is_service_name(name) {
        return Err(NewError::BadName(name.to_owned()));
    }
    let root = workspace_root(start)?;
    let manifest = root.join("Cargo.toml");
    let text = read(&manifest)?;
    let members =
        add_member(&text, &format!("services/{name}")).ok_or_else(|| NewError::NoMembers(name.to_owned()))?;
    let files: Vec<(PathBuf, String)> =
        FILES.iter().map(|(path, template)| (root.join(fill(path, name)), fill(template, name))).collect();
    for dir in [root.join("services").join(name), root.join("schemas").join(name)] {
        if dir.exists() {
            return Err(NewError::Exists(dir));
        }
    }
    let deploy = deploy_files(&root, name)?;
    for (path, contents) in files.iter().chain(&deploy) {
        let io = |error| NewError::Io { path: path.clone(), error };
        std::fs::create_dir_all(path.parent().expect("files have a parent")).map_err(io)?;
        std::fs::write(path, contents).map_err(|error| NewError::Io { path: path.clone(), error })?;
    }
    std::fs::write(&manifest, members).map_err(|error| NewError::Io { path: manifest, error })?;
    Ok(root)
}

fn read(path: &Path) -> Result<String, NewError> {
    std::fs::read_to_string(path).map_err(|error| NewError::Io { path: path.to_owned(), error })
}

/// The nearest directory at or above `start` whose Cargo.toml declares a `[workspace]`.
fn workspace_root(start: &Path) -> Result<PathBuf, NewError> {
    let start =
        std::fs::canonicalize(start).map_err(|error| NewError::Io { path: start.to_owned(), error })?;
    start
        .ancestors()
        .find(|dir| {
            std::fs::read_to_string(dir.join("Cargo.toml"))
                .is_ok_and(|text| text.lines().any(|line| line.trim() == "[workspace]"))
        })
        .map(Path::to_path_buf)
        .ok_or(NewError::NoWorkspace(start))
}

/// `manifest` with `member` added at the end of its `[workspace]` `members` list, in the list's
/// own layout (one per line, or inline), comments and the rest untouched (`toml_edit`); `None`
/// when the manifest does not parse or has no such list.
fn add_member(manifest: &str, member: &str) -> Option<String> {
    let mut doc: toml_edit::DocumentMut = manifest.parse().ok()?;
    let members = doc.get_mut("workspace")?.get_mut("members")?.as_array_mut()?;
    if members.iter().any(|m| m.as_str() == Some(member)) {
        return Some(manifest.to_owned());
    }
    // One per line: the new entry takes the last one's indentation, after a comment that ended the
    // list's last line; inline: a space after the `,`.
    let prefix_of =
        |v: &toml_edit::Value| v.decor().prefix().and_then(toml_edit::RawString::as_str).map(str::to_owned);
    let multiline = members.iter().next().and_then(prefix_of).is_some_and(|p| p.contains('\n'));
    let last = members.iter().last().map(|last| prefix_of(last).unwrap_or_else(|| "\n    ".to_owned()));
    let prefix = match last {
        Some(last) if multiline => {
            let trailing = members.trailing().as_str().unwrap_or_default().to_owned();
            let comment = trailing.strip_suffix('\n').unwrap_or(&trailing).to_owned();
            members.set_trailing("\n");
            members.set_trailing_comma(true);
            format!("{comment}{last}")
        }
        Some(_) => " ".to_owned(),
        None => String::new(),
    };
    members.push_formatted(toml_edit::Value::from(member).decorated(prefix, ""));
    Some(doc.to_string())
}

/// Where the workspace deploys its services, if it does as this one does: the image target in its
/// `Dockerfile` (a `FROM runtime AS <name>` stage, and the name added to `ARG SERVICES`), and its
/// Kubernetes manifests in `deploy/k8s/base` (`<name>.yaml`: Deployment, Service, PDB,
/// NetworkPolicy; listed in the kustomization's `resources` and `images`). Each is left out when its
/// file is missing or not in the expected shape; the new contents are returned, nothing is written.
fn deploy_files(root: &Path, name: &str) -> Result<Vec<(PathBuf, String)>, NewError> {
    let mut out = Vec::new();
    let dockerfile = root.join("Dockerfile");
    if dockerfile.is_file()
        && let Some(text) = add_image_target(&read(&dockerfile)?, name)
    {
        out.push((dockerfile, text));
    }
    let base = root.join("deploy/k8s/base");
    let kustomization = base.join("kustomization.yaml");
    let manifest = base.join(format!("{name}.yaml"));
    if kustomization.is_file() {
        if manifest.exists() {
            return Err(NewError::Exists(manifest));
        }
        if let Some(text) = add_to_kustomization(&read(&kustomization)?, name) {
            out.push((kustomization, text));
            out.push((manifest, fill(K8S_TEMPLATE, name)));
        }
    }
    Ok(out)
}

/// The service's Kubernetes manifests (`deploy/k8s/base/<name>.yaml`).
const K8S_TEMPLATE: &str = include_str!("new_service/k8s.yaml.tmpl");

/// `dockerfile` with `name` added to its `ARG SERVICES="…"` line and a runtime target for it at the
/// end; `None` without such a line, or when the name is there already.
fn add_image_target(dockerfile: &str, name: &str) -> Option<String> {
    let mut found = false;
    let mut lines: Vec<String> = Vec::new();
    for line in dockerfile.lines() {
        match line.strip_prefix("ARG SERVICES=\"").and_then(|rest| rest.strip_suffix('"')) {
            Some(list) if !found => {
                if list.split_whitespace().any(|s| s == name) {
                    return None;
                }
                found = true;
                lines.push(format!("ARG SERVICES=\"{}\"", format!("{list} {name}").trim()));
            }
            _ => lines.push(line.to_owned()),
        }
    }
    if !found {
        return None;
    }
    let mut text = lines.join("\n");
    text.push_str(&format!(
        "\n\nFROM runtime AS {name}\nCOPY --from=binaries /out/{name} /usr/local/bin/{name}\nENTRYPOINT [\"/usr/local/bin/{name}\"]\n"
    ));
    Some(text)
}

/// `kustomization` with `<name>.yaml` added at the end of its `resources:` list and the image
/// `backbone/<name>` at the end of its `images:` list (each a block list of `  - ` items); `None`
/// when it has no `resources:` list.
fn add_to_kustomization(kustomization: &str, name: &str) -> Option<String> {
    let mut lines: Vec<String> = kustomization.lines().map(str::to_owned).collect();
    let end_of = |lines: &[String], key: &str| {
        let start = lines.iter().position(|l| l == key)?;
        let items = lines[start + 1..].iter().take_while(|l| l.starts_with("  ")).count();
        Some(start + 1 + items)
    };
    let at = end_of(&lines, "resources:")?;
    lines.insert(at, format!("  - {name}.yaml"));
    if let Some(at) = end_of(&lines, "images:") {
        lines.insert(at, format!("  - name: backbone/{name}"));
        lines.insert(at + 1, "    newTag: 0.1.0".to_owned());
    }
    let mut text = lines.join("\n");
    text.push('\n');
    Some(text)
}

/// `template` with the service's names filled in.
fn fill(template: &str, name: &str) -> String {
    let ident = name.replace('-', "_");
    template
        .replace("{{name}}", name)
        .replace("{{ident}}", &ident)
        .replace("{{crate_ident}}", &ident)
        .replace("{{namespace}}", &format!("services.{ident}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_added_once_in_the_lists_style() {
        let multi = "[workspace]\nmembers = [\n    \"a\",\n    \"b\",\n]\n";
        assert_eq!(
            add_member(multi, "services/x").unwrap(),
            "[workspace]\nmembers = [\n    \"a\",\n    \"b\",\n    \"services/x\",\n]\n"
        );
        let again = add_member(&add_member(multi, "services/x").unwrap(), "services/x").unwrap();
        assert_eq!(again.matches("services/x").count(), 1);
        assert_eq!(
            add_member("[workspace]\nmembers = [\"a\"]\n", "b").unwrap(),
            "[workspace]\nmembers = [\"a\", \"b\"]\n"
        );
        assert_eq!(
            add_member("[workspace]\nmembers = []\n", "b").unwrap(),
            "[workspace]\nmembers = [\"b\"]\n"
        );
        assert_eq!(add_member("[package]\nname = \"x\"", "b"), None);
        // Comments and the rest of the manifest stay as they were.
        let commented = "# the estate\n[workspace]\nmembers = [\n    \"a\", # first\n]\n\n[workspace.lints.rust]\nx = 1\n";
        let added = add_member(commented, "b").unwrap();
        assert!(
            added.starts_with("# the estate\n[workspace]\nmembers = [\n    \"a\", # first\n    \"b\""),
            "{added}"
        );
        assert!(added.ends_with("[workspace.lints.rust]\nx = 1\n"), "{added}");
    }

    #[test]
    fn names_are_checked_before_anything_is_written() {
        for bad in ["Orders", "1st", "-x", "x-", "a_b", "", &"x".repeat(64)] {
            let dir = std::env::temp_dir();
            assert!(matches!(scaffold(bad, &dir), Err(NewError::BadName(_))), "{bad}");
        }
    }

    #[test]
    fn the_image_target_and_the_manifests_are_added_once() {
        let dockerfile = "FROM x AS build\nARG SERVICES=\"orders stock\"\nRUN make\n";
        let added = add_image_target(dockerfile, "gift-shop").unwrap();
        assert!(added.contains("ARG SERVICES=\"orders stock gift-shop\"\nRUN make\n"), "{added}");
        assert!(
            added.ends_with("\nFROM runtime AS gift-shop\nCOPY --from=binaries /out/gift-shop /usr/local/bin/gift-shop\nENTRYPOINT [\"/usr/local/bin/gift-shop\"]\n"),
            "{added}"
        );
        assert_eq!(add_image_target(&added, "gift-shop"), None, "not twice");
        assert_eq!(add_image_target("FROM x\n", "gift-shop"), None, "no SERVICES list: left alone");

        let kustomization = "kind: Kustomization\nresources:\n  - a.yaml\n  - b.yaml\nconfigMapGenerator:\n  - name: c\nimages:\n  - name: backbone/a\n    newTag: 0.1.0\n";
        let added = add_to_kustomization(kustomization, "gift-shop").unwrap();
        assert_eq!(
            added,
            "kind: Kustomization\nresources:\n  - a.yaml\n  - b.yaml\n  - gift-shop.yaml\nconfigMapGenerator:\n  - name: c\nimages:\n  - name: backbone/a\n    newTag: 0.1.0\n  - name: backbone/gift-shop\n    newTag: 0.1.0\n"
        );
        assert_eq!(add_to_kustomization("kind: Kustomization\n", "x"), None);
        let manifests = fill(K8S_TEMPLATE, "gift-shop");
        assert!(!manifests.contains("{{") && !manifests.contains("orders"), "{manifests}");
        for kind in ["Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy"] {
            assert!(manifests.contains(&format!("kind: {kind}\n")), "{kind}");
        }
    }

    /// The template is the sample services' manifests with the name left open: each of its
    /// documents, filled in for `orders` and for `stock`, is one of theirs word for word (so an edit
    /// to the samples that the template misses fails here).
    #[test]
    fn the_k8s_template_matches_the_sample_services_manifests() {
        let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/k8s/base");
        let policies = std::fs::read_to_string(base.join("network-policies.yaml")).unwrap();
        for name in ["orders", "stock"] {
            let manifests = std::fs::read_to_string(base.join(format!("{name}.yaml"))).unwrap();
            let filled = fill(K8S_TEMPLATE, name);
            let body = &filled[filled.find("apiVersion:").unwrap()..];
            for document in body.split("\n---\n") {
                let document = document.trim_end();
                assert!(
                    manifests.contains(document) || policies.contains(document),
                    "deploy/k8s/base has no document like this one of the template for {name}:\n{document}"
                );
            }
        }
    }

    #[test]
    fn templates_are_filled_everywhere() {
        for (path, template) in FILES {
            let filled = fill(template, "gift-shop");
            assert!(!filled.contains("{{"), "{path} keeps a placeholder");
            assert!(!fill(path, "gift-shop").contains("{{"), "{path}");
        }
        assert!(fill(FILES[1].1, "gift-shop").contains("gift_shop: Greeter"));
    }
}
