//! The repository's own recipes (CI's "recipes parse" check): every recipe
//! parses, names sources, steps and files that exist, runs only tools the
//! locked tools tree has, and every profile's steps can be built.

use std::path::Path;

use hiperiso_build::model::lock::Lock;
use hiperiso_build::model::manifest::{Manifest, PayloadFrom};
use hiperiso_build::model::recipe::Recipes;
use hiperiso_build::steps::runtime;
use hiperiso_build::steps::tools;

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// A profile's steps without `runtime` (built by cargo, not a recipe).
fn recipe_steps(steps: &[String]) -> Vec<String> {
    steps
        .iter()
        .filter(|s| *s != runtime::NAME)
        .cloned()
        .collect()
}

#[test]
fn repository_recipes_fit_the_manifest_and_the_lock() {
    let manifest = Manifest::load(&repo().join("hiperiso.toml")).unwrap();
    let recipes = Recipes::load_dir(&repo().join("recipes")).unwrap();
    recipes.check(&manifest).unwrap();
    let lock = Lock::read(&repo().join("hiperiso.lock")).unwrap().unwrap();
    let tools_lock = lock
        .tools
        .as_ref()
        .expect("hiperiso.lock has a [tools] table");
    recipes
        .check_tools(&tools::package_names(tools_lock), &manifest)
        .unwrap();
    assert!(
        lock.toolchain.is_some(),
        "hiperiso.lock pins no [toolchain] for the runtime step"
    );
    for (name, profile) in &manifest.profiles {
        let order = recipes.order(&recipe_steps(&profile.steps)).unwrap();
        for step in &order {
            for source in &recipes.get(step).unwrap().sources {
                assert!(
                    profile.sources.contains(source),
                    "profile {name}: step {step} needs source {source}, which the profile does not list"
                );
            }
        }
    }
    // The default profile builds everything from source into its payload.
    let (_, default) = manifest.profile(Some("default")).unwrap();
    assert_eq!(default.payload, Some(PayloadFrom::Steps));
    for step in [
        "linux",
        "qemu",
        "edk2",
        "seabios",
        "busybox",
        "grub-image",
        "runtime",
    ] {
        assert!(
            default.steps.iter().any(|s| s == step),
            "default profile lacks {step}"
        );
    }
}

/// The default profile's steps start heaviest first: the kernel's chain
/// before QEMU's, the small steps last.
#[test]
fn the_kernel_chain_starts_first() {
    let manifest = Manifest::load(&repo().join("hiperiso.toml")).unwrap();
    let recipes = Recipes::load_dir(&repo().join("recipes")).unwrap();
    let (_, default) = manifest.profile(Some("default")).unwrap();
    let order = recipes.order(&recipe_steps(&default.steps)).unwrap();
    let order = recipes.heaviest_first(&manifest, order);
    assert_eq!(
        order,
        [
            "linux-config",
            "linux",
            "libslirp",
            "qemu",
            "edk2",
            "grub",
            "busybox",
            "shim",
            "seabios",
            "grub-image"
        ]
    );
}
