//! Kernel modules: the dependency graph (from `modules.dep`, or from each
//! module's `.modinfo` when the package ships none, as Debian's kernel
//! packages do: depmod runs in their postinst), closures in load order and
//! the `modules.dep` text format.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use crate::payload::elf::{self, ElfError};

#[derive(Debug, thiserror::Error)]
pub enum KmodError {
    #[error("kernel module {name} is neither a module nor built in under {dir}")]
    Unknown { name: String, dir: String },
    #[error("kernel module {module} depends on {dependency}, which is not in {dir}")]
    MissingDependency {
        module: String,
        dependency: String,
        dir: String,
    },
    #[error("{path}: compressed modules are not supported")]
    Compressed { path: String },
    #[error("reading a kernel module")]
    Elf(#[from] ElfError),
    #[error("reading {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// `kvm-amd` and `kvm_amd` name the same module.
pub fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// Path relative to `/lib/modules/<version>/`.
    pub path: String,
    /// Names of the modules it needs, normalized.
    pub depends: Vec<String>,
}

/// All modules of one kernel version.
#[derive(Debug, Default)]
pub struct ModuleIndex {
    dir: String,
    modules: BTreeMap<String, Module>,
    builtin: BTreeSet<String>,
}

fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    normalize(file.strip_suffix(".ko").unwrap_or(file))
}

impl ModuleIndex {
    /// Reads `dir` (`…/lib/modules/<version>`).
    pub fn scan(dir: &Path) -> Result<Self, KmodError> {
        let read = |path: &Path| {
            fs::read(path).map_err(|source| KmodError::Io {
                path: path.display().to_string(),
                source,
            })
        };
        let mut index = Self {
            dir: dir.display().to_string(),
            ..Self::default()
        };
        if let Ok(text) = fs::read_to_string(dir.join("modules.builtin")) {
            index.builtin = text.lines().map(module_name).collect();
        }
        let dep_file = dir.join("modules.dep");
        if dep_file.exists() {
            let text = String::from_utf8_lossy(&read(&dep_file)?).to_string();
            for line in text.lines() {
                let Some((path, deps)) = line.split_once(':') else {
                    continue;
                };
                index.modules.insert(
                    module_name(path),
                    Module {
                        path: path.to_string(),
                        depends: deps.split_whitespace().map(module_name).collect(),
                    },
                );
            }
            return Ok(index);
        }
        let mut stack = vec![dir.join("kernel")];
        while let Some(current) = stack.pop() {
            let Ok(entries) = fs::read_dir(&current) else {
                continue;
            };
            for entry in entries.filter_map(Result::ok) {
                let path = entry.path();
                let relative = path
                    .strip_prefix(dir)
                    .unwrap_or(&path)
                    .to_string_lossy()
                    .to_string();
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(path);
                } else if relative.ends_with(".ko") {
                    let info = elf::modinfo(&relative, &read(&path)?)?;
                    let depends = info
                        .iter()
                        .filter(|(key, _)| key == "depends")
                        .flat_map(|(_, value)| value.split(','))
                        .filter(|name| !name.is_empty())
                        .map(normalize)
                        .collect();
                    index.modules.insert(
                        module_name(&relative),
                        Module {
                            path: relative,
                            depends,
                        },
                    );
                } else if relative.contains(".ko.") {
                    return Err(KmodError::Compressed { path: relative });
                }
            }
        }
        Ok(index)
    }

    pub fn get(&self, name: &str) -> Option<&Module> {
        self.modules.get(&normalize(name))
    }

    pub fn len(&self) -> usize {
        self.modules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.modules.is_empty()
    }

    /// The modules needed for `names`, dependencies first, each once.
    /// Built-in names are skipped; unknown names are an error.
    pub fn closure(&self, names: &[&str]) -> Result<Vec<&Module>, KmodError> {
        let mut order = Vec::new();
        let mut done = BTreeSet::new();
        for name in names {
            let name = normalize(name);
            if !self.modules.contains_key(&name) {
                if self.builtin.contains(&name) {
                    continue;
                }
                return Err(KmodError::Unknown {
                    name,
                    dir: self.dir.clone(),
                });
            }
            self.visit(&name, &mut done, &mut order)?;
        }
        Ok(order)
    }

    fn visit<'a>(
        &'a self,
        name: &str,
        done: &mut BTreeSet<String>,
        order: &mut Vec<&'a Module>,
    ) -> Result<(), KmodError> {
        if !done.insert(name.to_string()) {
            return Ok(());
        }
        let module = &self.modules[name];
        for dependency in &module.depends {
            if !self.modules.contains_key(dependency) {
                if self.builtin.contains(dependency) {
                    continue;
                }
                return Err(KmodError::MissingDependency {
                    module: name.to_string(),
                    dependency: dependency.clone(),
                    dir: self.dir.clone(),
                });
            }
            self.visit(dependency, done, order)?;
        }
        order.push(module);
        Ok(())
    }

    /// `modules.dep` lines (depmod's format: every transitive dependency,
    /// nearest first) for `modules`, sorted by path.
    pub fn modules_dep(&self, modules: &[&Module]) -> String {
        let mut lines: Vec<String> = modules
            .iter()
            .map(|module| {
                let mut deps = Vec::new();
                let mut done = BTreeSet::new();
                self.transitive(module, &mut done, &mut deps);
                format!("{}: {}", module.path, deps.join(" "))
                    .trim_end()
                    .to_string()
            })
            .collect();
        lines.sort();
        lines.iter().map(|line| format!("{line}\n")).collect()
    }

    fn transitive(&self, module: &Module, done: &mut BTreeSet<String>, out: &mut Vec<String>) {
        for dependency in &module.depends {
            if let Some(found) = self.modules.get(dependency)
                && done.insert(dependency.clone())
            {
                out.push(found.path.clone());
                self.transitive(found, done, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("modules.dep"),
            "kernel/arch/x86/kvm/kvm-amd.ko: kernel/arch/x86/kvm/kvm.ko kernel/virt/lib/irqbypass.ko\n\
             kernel/arch/x86/kvm/kvm.ko: kernel/virt/lib/irqbypass.ko\n\
             kernel/virt/lib/irqbypass.ko:\n\
             kernel/fs/fat/vfat.ko: kernel/fs/fat/fat.ko\n\
             kernel/fs/fat/fat.ko:\n",
        )
        .unwrap();
        fs::write(
            dir.path().join("modules.builtin"),
            "kernel/drivers/input/serio/i8042.ko\n",
        )
        .unwrap();
        dir
    }

    #[test]
    fn closure_is_in_load_order() {
        let dir = index();
        let index = ModuleIndex::scan(dir.path()).unwrap();
        let order: Vec<&str> = index
            .closure(&["kvm-amd", "i8042", "vfat", "kvm"])
            .unwrap()
            .iter()
            .map(|m| m.path.as_str())
            .collect();
        assert_eq!(
            order,
            [
                "kernel/virt/lib/irqbypass.ko",
                "kernel/arch/x86/kvm/kvm.ko",
                "kernel/arch/x86/kvm/kvm-amd.ko",
                "kernel/fs/fat/fat.ko",
                "kernel/fs/fat/vfat.ko",
            ]
        );
        let modules = index.closure(&["kvm_amd"]).unwrap();
        assert_eq!(
            index.modules_dep(&modules),
            "kernel/arch/x86/kvm/kvm-amd.ko: kernel/arch/x86/kvm/kvm.ko kernel/virt/lib/irqbypass.ko\n\
             kernel/arch/x86/kvm/kvm.ko: kernel/virt/lib/irqbypass.ko\n\
             kernel/virt/lib/irqbypass.ko:\n"
        );
        let err = index.closure(&["nosuch"]).unwrap_err();
        assert!(err.to_string().contains("kernel module nosuch"), "{err}");
    }
}
