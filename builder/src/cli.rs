//! Command-line arguments (clap derive). Only parsing lives here; every
//! verb's logic is a library function called from `main.rs`.
//!
//! This file names nothing of the crate: `build.rs` compiles it too to write
//! the man pages at build time (the tests check that its literals match
//! the constants of the lower layers).

use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};

const ABOUT_LONG: &str = "\
hiperiso-build makes a USB stick image that boots any ISO inside a recording
virtual machine. It reads a declarative manifest (hiperiso.toml), fetches
every pinned source with sha256 verification into a content-addressed cache,
builds the components in sandboxed steps and writes a GPT or MBR disk image.

Typical session:
  hiperiso-build summary                  # what the manifest resolves to
  hiperiso-build fetch                    # download + verify all sources
  hiperiso-build bump --check             # are there newer versions?
  hiperiso-build bump busybox --latest    # re-pin busybox, comments kept
  hiperiso-build --profile debian image -o hiperiso.img

The cache lives in $HIPERISO_CACHE_DIR, else $XDG_CACHE_HOME/hiperiso, else
~/.cache/hiperiso. The Debian mirror comes from the manifest's [mirrors],
else $HIPERISO_DEBIAN_MIRROR, else the host's apt sources.";

#[derive(Debug, Parser)]
#[command(name = "hiperiso-build", version, about = "Build hiperiso USB stick images from a declarative manifest", long_about = ABOUT_LONG)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// The manifest to read.
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        default_value = "hiperiso.toml"
    )]
    pub manifest: PathBuf,
    /// Manifest profile to use (default: the manifest's [image] profile).
    #[arg(long, global = true, value_name = "P")]
    pub profile: Option<String>,
    /// Cache directory (blobs, partial downloads, build outputs).
    #[arg(long, global = true, value_name = "DIR", env = "HIPERISO_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Use only what is already in the cache; name everything missing.
    #[arg(long, global = true)]
    pub offline: bool,
    /// Parallel downloads and build jobs (default: number of CPUs).
    #[arg(long, short = 'j', global = true, value_name = "N")]
    pub jobs: Option<usize>,
    /// More output (repeatable).
    #[arg(long, short = 'v', global = true, action = ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Only errors.
    #[arg(long, short = 'q', global = true)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the resolved manifest, the active profile and its sources.
    #[command(
        long_about = "Print the resolved manifest: image settings, the Debian mirror in use and where it \
        came from, the active profile and, for each of its sources, version, sha256, first URL and whether \
        the cache has it.\n\nExample:\n  hiperiso-build summary\n  hiperiso-build --profile debian summary"
    )]
    Summary,
    /// Download and verify sources into the cache.
    #[command(
        long_about = "Download every source of the active profile (or only NAME...), verify its sha256 \
        while streaming, and store it in the content-addressed cache. Interrupted downloads resume; 5xx \
        answers and timeouts are retried; a 404 or a hash mismatch moves on to the next mirror.\n\n\
        Examples:\n  hiperiso-build fetch\n  hiperiso-build fetch linux busybox --jobs 2\n  \
        hiperiso-build --offline fetch      # check that everything is cached"
    )]
    Fetch(NamesArgs),
    /// Fill in missing sha256 values in the manifest.
    #[command(
        long_about = "Download each source that has no sha256 yet, hash it and write the sha256 into the \
        manifest (comments and layout kept). With --force, re-pin sources that already have one: use it only \
        after checking why a file changed.\n\nExamples:\n  hiperiso-build pin\n  hiperiso-build pin --force seabios"
    )]
    Pin(PinArgs),
    /// Move a source to another version, or report newer versions.
    #[command(
        long_about = "Re-pin a component: render its URL for the new version, download and hash it, and only \
        then rewrite version and sha256 in the manifest with comments and layout kept. --latest and --check ask \
        the source's `watch` (an index page + regex, or a Debian Sources index) for the newest version.\n\n\
        Examples:\n  hiperiso-build bump busybox --to 1.36.1\n  hiperiso-build bump linux --latest\n  \
        hiperiso-build bump --check              # every source, changes nothing\n  \
        hiperiso-build bump --check busybox qemu"
    )]
    Bump(BumpArgs),
    /// Resolve Debian package closures into hiperiso.lock.
    #[command(
        long_about = "Resolve the active profile's Debian packages (and the tools tree) into hiperiso.lock \
        with versions and hashes, and pin the host's Rust toolchain (`rustc -V`) for the runtime step. \
        --update re-resolves everything, or only NAME..., e.g. after a pin decayed; `--update rustc` \
        re-pins the toolchain.\n\n\
        Examples:\n  hiperiso-build --profile debian lock\n  hiperiso-build lock --update linux-image-amd64\n  \
        hiperiso-build lock --update rustc"
    )]
    Lock(LockArgs),
    /// Run build steps (sandboxed, cached).
    #[command(
        long_about = "Run the build steps of the active profile, or only STEP... and what they need. Steps \
        run sandboxed and are cached by the hash of all their inputs.\n\nExamples:\n  hiperiso-build build\n  \
        hiperiso-build build linux"
    )]
    Build(StepsArgs),
    /// Rebuild in a varied sandbox and compare the outputs.
    #[command(
        long_about = "Rebuild STEP... (or every step) with a varied environment and compare the outputs \
        bit for bit with the cached ones.\n\nExample:\n  hiperiso-build verify busybox"
    )]
    Verify(StepsArgs),
    /// Write the complete disk image.
    #[command(
        long_about = "Assemble the stick image: an exFAT data partition and a FAT ESP with GRUB, the \
        kernel, the initramfs and the firmware. The profile's `payload` says where those come from: \
        its build steps (the default profile: everything built from the pinned sources, cached; \
        about 40 minutes cold on 2 cores, seconds when cached) or its locked Debian packages \
        (`--profile debian`, a few minutes).\n\n--push oci://HOST/REPO:TAG then publishes the image to an \
        OCI registry (credentials from docker's config.json) for `install --image` on other machines.\n\n\
        Examples:\n  hiperiso-build image -o hiperiso.img\n  \
        hiperiso-build --profile debian image -o small.img --table mbr --size 1GiB\n  \
        hiperiso-build image --push oci://registry.example/team/hiperiso:v1"
    )]
    Image(ImageArgs),
    /// Write the stick layout onto a device (or update its ESP).
    #[command(
        long_about = "Lay the stick layout out on DEVICE for its real size. --update rewrites only the ESP \
        and boot code and keeps the data partition byte for byte.\n\n\
        Refused before any work: the disk holding the running system, a disk in use, a disk that is \
        not removable (without --force), and a disk that already holds a hiperiso stick (without \
        --reinstall; the refusal names the ISOs and sessions a reinstall would erase).\n\n\
        GPT is the default table (the manifest's [image] table): the stick boots through UEFI, and GPT \
        keeps a backup table; -g asks for it explicitly, --table mbr suits old firmware that boots only \
        MBR disks.\n\n\
        --image FILE|oci://HOST/REPO:TAG installs a finished image instead (one `image` wrote, or one \
        `image --push` published), without a manifest: its hash is checked against the image_sha256 \
        of its build.json first, then it is written as it is (the stick keeps the image's size) with \
        the same refusals, sparse writes and read-back.\n\nExamples:\n  \
        hiperiso-build install /dev/sdX --dry-run\n  hiperiso-build install /dev/sdX --yes\n  \
        hiperiso-build install --image oci://registry.example/team/hiperiso:v1 /dev/sdX\n  \
        hiperiso-build install -g -L MYSTICK /dev/sdX\n  \
        hiperiso-build install --update /dev/sdX --yes\n  \
        hiperiso-build install --reinstall /dev/sdX    # erase an existing stick"
    )]
    Install(InstallArgs),
    /// Show the layout and contents of an image or device.
    #[command(
        long_about = "Print the partition table, file systems, labels and ESP contents of an image file \
        or a block device.\n\nExample:\n  hiperiso-build inspect hiperiso.img"
    )]
    Inspect(InspectArgs),
    /// Boot the image in QEMU with ISOs attached, as a stick would boot.
    #[command(
        long_about = "Boot the image in QEMU with OVMF as a USB stick on xHCI, as a PC boots the stick. \
        --iso files are first copied into /ISOs/ of the data partition (no mount needed) of a copy-on-write \
        copy, so the image stays clean unless --keep is given. --boot NAME makes GRUB boot that image at once. \
        The serial console is shown live; at the end the session is read back from the image, its report is \
        printed. --accel auto (the default) starts this very VM under KVM for a few seconds and falls back \
        to TCG with an SVM-capable CPU (so the stick's own KVM path still runs) when it does not start; a \
        UEFI guest under TCG gets the `outer-qemu` step's QEMU (built once, then cached). At --timeout the VM's \
        power button is pressed: the stick finishes the session, writes its report and powers off.\n\n\
        Exit status: 0 booted (the guest reached a boot loader menu, an installer, a login or userspace); \
        2 failed (the report names a guest failure); 3 stuck (the guest stopped at an early stage or never \
        reached hiperiso-init before --timeout); 1 any other error.\n\nExamples:\n  \
        hiperiso-build run --iso debian.iso --boot debian.iso\n  \
        hiperiso-build run --image hiperiso.img --timeout 600 --keep --accel tcg"
    )]
    Run(RunArgs),
    /// Remove build outputs of this manifest from the cache.
    #[command(
        long_about = "Remove the cached output trees, step records, logs and work directories of the \
        steps under recipes/. Downloaded sources stay.\n\nExample:\n  hiperiso-build clean"
    )]
    Clean,
    /// Delete build outputs the current recipes no longer need.
    #[command(
        long_about = "Keep the outputs of the current recipes (same recipe text, files and source pins) \
        and delete every other step record, output tree, log, verify directory and abandoned work \
        directory. Downloaded sources and packages are not touched.\n\nExample:\n  hiperiso-build gc"
    )]
    Gc,
    /// Check the host: user namespaces, loop devices, QEMU, disk space.
    #[command(
        long_about = "Check what the next command needs and say how to fix what is missing: QEMU, KVM \
        (with the very VM `run` starts; without it `run` uses TCG), nested virtualization, OVMF, user \
        namespaces for the build sandbox, free space in the cache for the active profile, loop devices \
        for `install` tests, the Debian mirror (or, with --offline, every pinned file in the cache) and \
        the lock's pinned rustc. Each check prints ok, warn or fail; the exit status is non-zero when \
        any check fails.\n\nExamples:\n  hiperiso-build doctor\n  hiperiso-build --offline doctor --json"
    )]
    Doctor(DoctorArgs),
    /// Work with hiperiso.json, the stick's runtime configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print a shell completion script.
    #[command(
        long_about = "Print the completion script for SHELL on stdout. Man pages for hiperiso-build and \
        hiperiso-log are written at build time, into the target directory's `man/`.\n\nExamples:\n  \
        hiperiso-build completions bash > /etc/bash_completion.d/hiperiso-build\n  \
        hiperiso-build completions zsh > \"${fpath[1]}/_hiperiso-build\"\n  \
        hiperiso-build completions fish > ~/.config/fish/completions/hiperiso-build.fish"
    )]
    Completions(CompletionsArgs),
    /// Create key pairs (shared step caches, Secure Boot).
    #[command(
        long_about = "Create a key pair. `keys` (or `keys cache`) writes an ed25519 pair that signs \
        the step records pushed to a shared cache: DIR/cache-signing.ed25519 (secret, mode 600) and \
        DIR/cache-signing.ed25519.pub, whose one line goes into the [cache] trusted-keys of every \
        manifest that should use those steps. `keys secure-boot` writes the user's own Secure Boot \
        key: DIR/secure-boot.key (RSA-2048, mode 600), DIR/secure-boot.crt (its self-signed X.509 \
        certificate) and DIR/secure-boot.cer (the same in DER, for firmware setup's \"enroll from \
        file\" or `mokutil --import`); name them in the manifest's [secure-boot] to sign the stick's \
        boot chain (docs/secure-boot.md). Existing keys are never overwritten.\n\nExamples:\n  \
        hiperiso-build keys\n  hiperiso-build keys --dir ci-keys --name ci-1\n  \
        hiperiso-build keys secure-boot --name \"my hiperiso db key\""
    )]
    Keys(KeysArgs),
}

#[derive(Debug, Clone, Args)]
pub struct KeysArgs {
    /// Which key pair (default: cache).
    #[command(subcommand)]
    pub kind: Option<KeyKind>,
    /// Where to write the files (default: $XDG_CONFIG_HOME/hiperiso, else
    /// ~/.config/hiperiso).
    #[arg(long, global = true, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// The key's name, as records and trusted-keys show it (default:
    /// hiperiso-cache-1), or the certificate's common name (default:
    /// hiperiso Secure Boot key).
    #[arg(long, global = true, value_name = "NAME")]
    pub name: Option<String>,
}

/// The kinds of key pair `keys` makes.
#[derive(Debug, Clone, Subcommand)]
pub enum KeyKind {
    /// The ed25519 pair that signs shared step records.
    Cache,
    /// The user's Secure Boot db/MOK key: RSA key and X.509 certificate.
    SecureBoot,
}

/// `--cache-from`, `--cache-to` and `--require-cache` of the verbs that
/// build steps.
#[derive(Debug, Clone, Default, Args)]
pub struct SharedCacheArgs {
    /// Look steps up in this registry (oci://HOST/REPO; repeatable) instead
    /// of the manifest's [cache] registries.
    #[arg(long, value_name = "oci://HOST/REPO")]
    pub cache_from: Vec<String>,
    /// Push every step to this registry (repeatable); records are signed
    /// with the key `hiperiso-build keys` made.
    #[arg(long, value_name = "oci://HOST/REPO")]
    pub cache_to: Vec<String>,
    /// Fail when a registry cannot be used (unreachable, refused record,
    /// corrupt blob) instead of building locally.
    #[arg(long)]
    pub require_cache: bool,
}

#[derive(Debug, Clone, Subcommand)]
pub enum ConfigCommand {
    /// Check a hiperiso.json before it goes onto a stick.
    #[command(
        long_about = "Read FILE as hiperiso-init would and report every problem it would meet: invalid \
        JSON, unknown keys, values of the wrong type or range, one line each as FILE:LINE: KEY: MESSAGE. \
        The exit status is non-zero when there is any. The stick also carries the file's JSON Schema, \
        hiperiso/hiperiso.schema.json, for editors.\n\nExample:\n  \
        hiperiso-build config check overlays/data/hiperiso/hiperiso.json"
    )]
    Check {
        /// The hiperiso.json to check.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

/// Shells `completions` writes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ShellArg {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, Clone, Args)]
pub struct CompletionsArgs {
    #[arg(value_enum)]
    pub shell: ShellArg,
}

#[derive(Debug, Clone, Args)]
pub struct DoctorArgs {
    /// Print the checks as JSON: {"checks":[{name,status,detail,fix}],"ok":bool}.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct NamesArgs {
    /// Source names (default: every source of the active profile).
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,
}

#[derive(Debug, Clone, Args)]
pub struct PinArgs {
    /// Source names (default: every source of the active profile).
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,
    /// Re-pin sources that already have a sha256.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Clone, Args)]
#[command(group(clap::ArgGroup::new("mode").required(true).args(["to", "latest", "check"])))]
pub struct BumpArgs {
    /// Source name(s); exactly one with --to and --latest.
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,
    /// Move to this version.
    #[arg(long, value_name = "VERSION")]
    pub to: Option<String>,
    /// Move to the newest version the source's `watch` finds.
    #[arg(long)]
    pub latest: bool,
    /// Report newer versions; change nothing.
    #[arg(long)]
    pub check: bool,
}

#[derive(Debug, Clone, Args)]
pub struct LockArgs {
    /// Re-resolve every package, or only the named ones.
    #[arg(long, value_name = "NAME", num_args = 0..)]
    pub update: Option<Vec<String>>,
}

#[derive(Debug, Clone, Args)]
pub struct StepsArgs {
    /// Step names (default: every recipe under recipes/); `runtime` is the
    /// host-cargo step of hiperiso-init and hiperiso-log.
    #[arg(value_name = "STEP")]
    pub steps: Vec<String>,
    /// Use this prepared root as the tools tree (`/` inside the sandbox)
    /// instead of one unpacked from hiperiso.lock.
    #[arg(long, value_name = "DIR", env = "HIPERISO_TOOLS_ROOT")]
    pub tools_root: Option<PathBuf>,
    #[command(flatten)]
    pub shared: SharedCacheArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TableArg {
    Gpt,
    Mbr,
}

#[derive(Debug, Clone, Args)]
pub struct ImageArgs {
    /// Output image file.
    #[arg(short = 'o', long, value_name = "PATH", default_value = "hiperiso.img")]
    pub output: PathBuf,
    /// Partition table (default: the manifest's [image] table).
    #[arg(long, value_enum)]
    pub table: Option<TableArg>,
    /// Image size such as 2GiB (default: the manifest's [image] size).
    #[arg(long, value_name = "SIZE")]
    pub size: Option<String>,
    /// Use this directory as the ESP payload instead of the build's (the
    /// profile's build steps are then not run).
    #[arg(long, value_name = "DIR")]
    pub esp_tree: Option<PathBuf>,
    /// Use this directory for the data partition instead of overlays/data.
    #[arg(long, value_name = "DIR")]
    pub data_tree: Option<PathBuf>,
    /// Data partition label: exFAT, at most 11 characters (default: the
    /// manifest's [image] data-label).
    #[arg(long, short = 'L', value_name = "L")]
    pub label: Option<String>,
    /// Then publish the image to an OCI registry (oci://HOST[:PORT]/REPO[:TAG],
    /// tag `latest` when none): its non-zero blocks as one zstd layer, its
    /// build.json as the config blob and as a manifest annotation.
    #[arg(long, value_name = "OCI_REF")]
    pub push: Option<String>,
    #[command(flatten)]
    pub shared: SharedCacheArgs,
}

#[derive(Debug, Clone, Args)]
pub struct InstallArgs {
    /// Block device, e.g. /dev/sdX.
    #[arg(value_name = "DEVICE")]
    pub device: PathBuf,
    /// Install this finished image (a file `image` wrote, or
    /// oci://HOST[:PORT]/REPO[:TAG] that `image --push` published) as it
    /// is, instead of building one for the device: no manifest is needed.
    /// Its hash is checked against the `image_sha256` its build.json
    /// records before anything is written.
    #[arg(long, value_name = "FILE|OCI_REF", conflicts_with_all = ["update", "table", "gpt", "label", "esp_tree", "data_tree"])]
    pub image: Option<String>,
    /// Rewrite only the ESP and boot code; keep the data partition.
    #[arg(long)]
    pub update: bool,
    /// Partition table (default: the manifest's [image] table, `gpt` as
    /// shipped). GPT because the stick boots through UEFI, which every PC
    /// since about 2012 has, and GPT keeps a backup table and names the
    /// data partition; `mbr` for old firmware that boots only MBR disks.
    #[arg(long, value_enum, conflicts_with = "update")]
    pub table: Option<TableArg>,
    /// Short for `--table gpt`.
    #[arg(short = 'g', conflicts_with_all = ["table", "update"])]
    pub gpt: bool,
    /// Data partition label: exFAT, at most 11 characters (default: the
    /// manifest's [image] data-label).
    #[arg(long, short = 'L', value_name = "L", conflicts_with = "update")]
    pub label: Option<String>,
    /// Install over a disk that already holds a hiperiso stick, erasing its
    /// ISOs and sessions (without it, `install` refuses such a disk, names
    /// what it would erase and suggests `--update`).
    #[arg(long, short = 'I', conflicts_with = "update")]
    pub reinstall: bool,
    /// Print what would be written; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Allow a disk that is not removable (mounted, swap and system disks
    /// are always refused).
    #[arg(long)]
    pub force: bool,
    /// Use this directory as the ESP payload instead of the build's.
    #[arg(long, value_name = "DIR")]
    pub esp_tree: Option<PathBuf>,
    /// Use this directory for the data partition instead of overlays/data.
    #[arg(long, value_name = "DIR", conflicts_with = "update")]
    pub data_tree: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct InspectArgs {
    /// Image file or block device.
    #[arg(value_name = "IMAGE|DEVICE")]
    pub target: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Image to boot (default: the last one `image` wrote).
    #[arg(long, value_name = "IMG")]
    pub image: Option<PathBuf>,
    /// ISO files to put under /ISOs/ on the data partition.
    #[arg(long, value_name = "FILE", num_args = 1..)]
    pub iso: Vec<PathBuf>,
    /// Boot this ISO (a file name under /ISOs/) without waiting in the menu.
    #[arg(long, value_name = "NAME")]
    pub boot: Option<String>,
    /// Memory of the VM in MiB (default 4096).
    #[arg(long, value_name = "MB")]
    pub ram: Option<u64>,
    /// Stop the VM after this many seconds (default 1800).
    #[arg(long, value_name = "S")]
    pub timeout: Option<u64>,
    /// Change the image itself (ISOs, sessions) instead of a copy-on-write copy.
    #[arg(long)]
    pub keep: bool,
    /// The outer VM's accelerator: `auto` runs this very VM under KVM for a
    /// few seconds and falls back to TCG (naming why) if it does not start.
    #[arg(long, value_enum, default_value_t = AccelArg::Auto)]
    pub accel: AccelArg,
}

/// `run --accel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AccelArg {
    Auto,
    Kvm,
    Tcg,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    /// The literals this file uses (it names nothing of the crate, for
    /// build.rs) are the lower layers' constants.
    #[test]
    fn literals_match_the_constants() {
        let cli = Cli::try_parse_from(["hiperiso-build", "summary"]).unwrap();
        assert_eq!(
            cli.global.manifest,
            PathBuf::from(crate::model::manifest::DEFAULT_MANIFEST)
        );
        let command = Cli::command();
        let cache = command
            .get_arguments()
            .find(|a| a.get_id() == "cache_dir")
            .unwrap();
        assert_eq!(
            cache.get_env(),
            Some(std::ffi::OsStr::new(crate::sources::store::CACHE_DIR_ENV))
        );
    }

    #[test]
    fn install_short_flags() {
        let cli = Cli::try_parse_from([
            "hiperiso-build",
            "install",
            "-g",
            "-L",
            "MINE",
            "-I",
            "/dev/sdz",
        ])
        .unwrap();
        let Command::Install(args) = cli.command else {
            panic!("not install")
        };
        assert!(args.gpt && args.reinstall);
        assert_eq!(args.label.as_deref(), Some("MINE"));
        assert!(
            Cli::try_parse_from(["hiperiso-build", "install", "-g", "--table", "mbr", "x"])
                .is_err()
        );
        assert!(Cli::try_parse_from(["hiperiso-build", "install", "-I", "--update", "x"]).is_err());
    }

    #[test]
    fn bump_needs_a_mode() {
        assert!(Cli::try_parse_from(["hiperiso-build", "bump", "busybox"]).is_err());
        let cli = Cli::try_parse_from(["hiperiso-build", "bump", "--check"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Bump(BumpArgs { check: true, .. })
        ));
        let cli = Cli::try_parse_from([
            "hiperiso-build",
            "--offline",
            "bump",
            "busybox",
            "--to",
            "1.36.1",
            "-j",
            "2",
        ])
        .unwrap();
        assert!(cli.global.offline);
        assert_eq!(cli.global.jobs, Some(2));
    }
}
