//! Compiles every `cuda/*.cu` of the repository with nvcc into a fatbin and generates `$OUT_DIR/kernels.rs`, which
//! embeds the fatbins (include_bytes!) and is compiled only under `cfg(yolo_cuda_kernels)`.
//!
//! A fatbin holds SASS (machine code) for every real architecture from sm_75 up to the newest this nvcc knows
//! (`nvcc --list-gpu-code`), so that the driver loads it as it is on every such GPU, and the PTX of the newest,
//! which the driver JIT-compiles on a GPU newer than all of them. One `cuModuleLoadData` picks the right part.
//!
//! nvcc is looked for in `$NVCC`, then on `PATH`, then in `$CUDA_HOME/bin` (`scripts/install-nvcc.sh` installs one
//! from PyPI and prints the `NVCC=` line). Without nvcc, or when a kernel does not compile, the crate still builds,
//! CPU only, and says why in a cargo warning and in `availability()`; with `YOLO_LOSS_REQUIRE_CUDA=1` (CI) both are
//! hard errors instead, so that a kernel that stops compiling cannot slip through as a CPU-only build.
//!
//! It also builds the CPU emulator of the same kernels for this crate's tests (`build_emulator`): every `cuda/*.cu`
//! with the host C++ compiler, and a generated table of their kernels; no kernel is listed by hand anywhere.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The oldest GPUs the kernels are built for (Turing, the oldest CUDA 13 supports). src/embedded.rs reads the
/// architectures that were built from the generated file, not from here.
const MIN_ARCH: u32 = 75;

/// Flags for every kernel. `--fmad=false`: the CPU backend is the reference and never fuses a*b+c, so neither do
/// the kernels (the assigner compares computed metrics; identical rounding keeps its choices identical more often).
/// No `--use_fast_math`: expf/log1pf must stay the accurate versions for the loss values to match the CPU's.
const NVCC_FLAGS: &[&str] = &["-O3", "-std=c++17", "--fmad=false"];

fn main() {
    println!("cargo::rustc-check-cfg=cfg(yolo_cuda_kernels)");
    println!("cargo::rustc-check-cfg=cfg(yolo_cuda_emulator)");
    println!("cargo::rerun-if-changed=build.rs");
    // NVCC_CCBIN / NVCC_PREPEND_FLAGS / NVCC_APPEND_FLAGS are read by nvcc itself (host compiler, extra flags).
    for var in [
        "NVCC",
        "CUDA_HOME",
        "PATH",
        "YOLO_LOSS_REQUIRE_CUDA",
        "NVCC_CCBIN",
        "NVCC_PREPEND_FLAGS",
        "NVCC_APPEND_FLAGS",
        "CXX",
        "AR",
    ] {
        println!("cargo::rerun-if-env-changed={var}");
    }

    let require = env::var("YOLO_LOSS_REQUIRE_CUDA").is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false" | "no"));
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    // Canonical, so that compiler messages and rerun paths read /…/cuda/x.cu rather than crates/cuda/../../cuda.
    let kernel_dir = manifest_dir.join("../../cuda");
    let kernel_dir = fs::canonicalize(&kernel_dir).unwrap_or(kernel_dir);
    // A directory is scanned as a whole: new .cu files and edited headers (.cuh) both trigger a rebuild.
    println!("cargo::rerun-if-changed={}", kernel_dir.display());

    // The CPU emulator of every kernel, for this crate's own tests (see emu/emu.hpp). Independent of nvcc; without
    // a host C++ compiler the emulator tests skip and say why.
    let emu_dir = manifest_dir.join("emu");
    println!("cargo::rerun-if-changed={}", emu_dir.display());
    match build_emulator(&kernel_dir, &emu_dir, &out_dir) {
        Ok(lib_dir) => {
            println!("cargo::rustc-link-search=native={}", lib_dir.display());
            println!("cargo::rustc-cfg=yolo_cuda_emulator");
            println!("cargo::rustc-env=YOLO_LOSS_CUDA_EMULATOR_NOTE=built");
        }
        Err(reason) => {
            let first = reason.lines().next().unwrap_or_default().replace(['\r', '\n'], " ");
            println!("cargo::rustc-env=YOLO_LOSS_CUDA_EMULATOR_NOTE={first}");
        }
    }

    match build_kernels(&kernel_dir, &out_dir) {
        Ok(built) => {
            println!("cargo::rustc-cfg=yolo_cuda_kernels");
            let sass: Vec<String> = built.sass.iter().map(|a| format!("sm_{a}")).collect();
            println!(
                "cargo::rustc-env=YOLO_LOSS_CUDA_BUILD_NOTE=kernels compiled by nvcc {} to SASS for {} and PTX for \
                 compute_{}",
                built.release,
                sass.join(" "),
                built.ptx
            );
        }
        Err(reason) => {
            let first_line = reason.lines().next().unwrap_or_default();
            let (kind, headline) = if require {
                ("error", format!("YOLO_LOSS_REQUIRE_CUDA is set, but the CUDA kernels were not built: {first_line}"))
            } else {
                ("warning", format!("yolo-loss-cuda: building WITHOUT CUDA kernels (CPU only): {first_line}"))
            };
            println!("cargo::{kind}={headline}");
            for line in reason.lines().skip(1).take(60) {
                println!("cargo::{kind}=    {line}");
            }
            if require {
                return; // cargo::error already fails the build (after this script); nothing else to emit
            }
            println!("cargo::rustc-env=YOLO_LOSS_CUDA_BUILD_NOTE={}", first_line.replace(['\r', '\n'], " "));
        }
    }
}

struct Built {
    /// `nvcc --version` release, e.g. "13.0".
    release: String,
    /// The real architectures with SASS in every fatbin (75 for sm_75), ascending.
    sass: Vec<u32>,
    /// The virtual architecture of the PTX in every fatbin: the newest of `sass`.
    ptx: u32,
}

/// Finds nvcc, compiles every kernel file and writes `kernels.rs`. Err: why the build is CPU only (first line a
/// one-sentence reason, further lines the compiler's output).
fn build_kernels(kernel_dir: &Path, out_dir: &Path) -> Result<Built, String> {
    let sources = kernel_sources(kernel_dir)?;
    let nvcc = find_nvcc()?;
    println!("cargo::rerun-if-changed={}", nvcc.display());
    let release = nvcc_release(&nvcc)?;
    let sass = real_architectures(&nvcc)?;
    let ptx = *sass.last().expect("real_architectures is never empty");
    let targets = Targets { sass: &sass, ptx };

    // nvcc runs ptxas once per architecture (seconds per file); compile the files side by side.
    let results: Vec<Result<Module, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> =
            sources.iter().map(|src| scope.spawn(|| compile(&nvcc, &targets, kernel_dir, src, out_dir))).collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err("nvcc thread panicked".into()))).collect()
    });
    let modules = results.into_iter().collect::<Result<Vec<_>, _>>()?;

    let mut seen = std::collections::BTreeMap::new();
    for m in &modules {
        for e in &m.entries {
            if let Some(other) = seen.insert(e.clone(), m.name.clone()) {
                return Err(format!(
                    "kernel `{e}` is defined in both {other}.cu and {}.cu (names must be unique)",
                    m.name
                ));
            }
        }
    }
    fs::write(out_dir.join("kernels.rs"), generated_rust(&modules, &release, &targets))
        .map_err(|e| format!("cannot write kernels.rs into OUT_DIR: {e}"))?;
    Ok(Built { release, sass, ptx })
}

fn kernel_sources(kernel_dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries = fs::read_dir(kernel_dir)
        .map_err(|e| format!("cannot read the kernel directory {}: {e}", kernel_dir.display()))?;
    let mut sources: Vec<PathBuf> =
        entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "cu")).collect();
    sources.sort(); // a stable order for the generated file
    if sources.is_empty() {
        return Err(format!("no .cu files in {}", kernel_dir.display()));
    }
    for src in &sources {
        println!("cargo::rerun-if-changed={}", src.display());
    }
    Ok(sources)
}

/// `$NVCC` (a path, or a bare name looked up on PATH), then `nvcc` on PATH, then `$CUDA_HOME/bin/nvcc`.
fn find_nvcc() -> Result<PathBuf, String> {
    let exe = format!("nvcc{}", env::consts::EXE_SUFFIX);
    if let Some(v) = env::var_os("NVCC").filter(|v| !v.is_empty()) {
        let p = PathBuf::from(&v);
        let found = if p.components().count() == 1 { search_path(p.to_str().unwrap_or(&exe)) } else { Some(p.clone()) };
        // An explicit NVCC that is wrong is reported, not silently replaced by another nvcc.
        return found.filter(|p| p.is_file()).ok_or_else(|| {
            format!("NVCC is set to `{}`, which is not an existing file; unset it or point it at nvcc", p.display())
        });
    }
    if let Some(p) = search_path(&exe) {
        return Ok(p);
    }
    if let Some(home) = env::var_os("CUDA_HOME").filter(|v| !v.is_empty()) {
        let p = PathBuf::from(home).join("bin").join(&exe);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err("nvcc was not found at build time (looked at $NVCC, PATH, $CUDA_HOME/bin); to build the kernels run \
         `eval \"$(bash scripts/install-nvcc.sh)\"` and rebuild"
        .into())
}

fn search_path(exe: &str) -> Option<PathBuf> {
    env::split_paths(&env::var_os("PATH")?).map(|d| d.join(exe)).find(|p| p.is_file())
}

fn nvcc_release(nvcc: &Path) -> Result<String, String> {
    let out =
        Command::new(nvcc).arg("--version").output().map_err(|e| format!("cannot run {}: {e}", nvcc.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "Cuda compilation tools, release 13.0, V13.0.88"
    text.split("release ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .map(|r| r.trim().to_string())
        .filter(|r| out.status.success() && !r.is_empty())
        .ok_or_else(|| format!("`{} --version` did not report a release:\n{text}", nvcc.display()))
}

/// The real architectures this nvcc can write SASS for, from sm_75 up, ascending (`nvcc --list-gpu-code` lists
/// them unordered). Only plain `sm_XY`: the `sm_XYa`/`sm_XYf` variants run on one GPU family only, and the plain
/// code of the same number covers those GPUs.
fn real_architectures(nvcc: &Path) -> Result<Vec<u32>, String> {
    let out = Command::new(nvcc)
        .arg("--list-gpu-code")
        .output()
        .map_err(|e| format!("cannot run {} --list-gpu-code: {e}", nvcc.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut archs: Vec<u32> = text
        .split_whitespace()
        .filter_map(|code| code.strip_prefix("sm_")?.parse::<u32>().ok())
        .filter(|&arch| arch >= MIN_ARCH)
        .collect();
    archs.sort_unstable();
    archs.dedup();
    if !out.status.success() || archs.is_empty() {
        return Err(format!(
            "`{} --list-gpu-code` listed no architecture from sm_{MIN_ARCH} up:\n{text}{}",
            nvcc.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(archs)
}

/// What each fatbin carries: SASS for every architecture of `sass`, PTX for `compute_<ptx>`.
struct Targets<'a> {
    sass: &'a [u32],
    ptx: u32,
}

impl Targets<'_> {
    /// nvcc's `-gencode` pairs: each architecture's SASS compiled from the PTX of its own virtual architecture
    /// (as a toolkit build does), and for the newest the PTX itself as well.
    fn gencode_args(&self) -> Vec<String> {
        self.sass
            .iter()
            .map(|&a| {
                let code = if a == self.ptx { format!("[sm_{a},compute_{a}]") } else { format!("sm_{a}") };
                format!("-gencode=arch=compute_{a},code={code}")
            })
            .collect()
    }
}

struct Module {
    /// File stem: `det_loss` for cuda/det_loss.cu.
    name: String,
    fatbin_path: PathBuf,
    /// `.entry` names in the PTX (the `extern "C"` kernels).
    entries: Vec<String>,
}

/// Compiles `src` into `<name>.fatbin`, and once more to the PTX of the newest architecture alone, from which the
/// kernel names are read (the fatbin compresses its PTX; this costs one front-end pass, no ptxas).
fn compile(nvcc: &Path, targets: &Targets, kernel_dir: &Path, src: &Path, out_dir: &Path) -> Result<Module, String> {
    let name =
        src.file_stem().and_then(|s| s.to_str()).ok_or_else(|| format!("odd kernel file name {}", src.display()))?;
    let fatbin_path = out_dir.join(format!("{name}.fatbin"));
    let ptx_path = out_dir.join(format!("{name}.ptx"));
    run_nvcc(nvcc, kernel_dir, src, &fatbin_path, &[vec!["-fatbin".to_string()], targets.gencode_args()].concat())?;
    run_nvcc(nvcc, kernel_dir, src, &ptx_path, &["--ptx".to_string(), format!("-arch=compute_{}", targets.ptx)])?;
    let ptx =
        fs::read_to_string(&ptx_path).map_err(|e| format!("nvcc wrote no readable PTX for {}: {e}", src.display()))?;
    let entries = ptx_entries(&ptx);
    if entries.is_empty() {
        return Err(format!("{} defines no extern \"C\" __global__ kernel (no .entry in its PTX)", src.display()));
    }
    Ok(Module { name: name.to_string(), fatbin_path, entries })
}

/// nvcc with [`NVCC_FLAGS`] and `target_args` on `src`, writing `output`.
fn run_nvcc(nvcc: &Path, kernel_dir: &Path, src: &Path, output: &Path, target_args: &[String]) -> Result<(), String> {
    let out = Command::new(nvcc)
        .args(NVCC_FLAGS)
        .args(target_args)
        .arg("-I")
        .arg(kernel_dir)
        .arg("-o")
        .arg(output)
        .arg(src)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", nvcc.display()))?;
    if !out.status.success() {
        return Err(format!(
            "nvcc failed on {} ({})\n{}{}",
            src.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// Kernel names from lines such as `.visible .entry yl_det_decode(`.
fn ptx_entries(ptx: &str) -> Vec<String> {
    ptx.lines()
        .filter_map(|line| {
            let rest = line.trim_start().split(".entry ").nth(1)?;
            let name = rest.split(|c: char| c == '(' || c.is_whitespace()).next()?;
            (!name.is_empty()).then(|| name.to_string())
        })
        .collect()
}

fn generated_rust(modules: &[Module], release: &str, targets: &Targets) -> String {
    let mut s = String::from("// Generated by crates/cuda/build.rs from cuda/*.cu. Do not edit.\n\n");
    let _ = writeln!(s, "pub(crate) const NVCC_RELEASE: &str = {release:?};\n");
    let _ = writeln!(s, "pub(crate) const SASS_ARCHS: &[u32] = &{:?};\n", targets.sass);
    let _ = writeln!(s, "pub(crate) const PTX_ARCH: u32 = {};\n", targets.ptx);
    s.push_str("pub(crate) const MODULES: &[KernelModule] = &[\n");
    for m in modules {
        let _ = writeln!(
            s,
            "    KernelModule {{ name: {:?}, fatbin: include_bytes!({:?}), entries: &{:?} }},",
            m.name,
            m.fatbin_path.display().to_string(),
            m.entries
        );
    }
    s.push_str("];\n\npub(crate) const KERNEL_NAMES: &[&str] = &[\n");
    for e in modules.iter().flat_map(|m| &m.entries) {
        let _ = writeln!(s, "    {e:?},");
    }
    s.push_str("];\n");
    s
}

/// Compiles the emulator's runtime and probes (`emu/*.cpp`) and every `cuda/*.cu` with the host C++ compiler (the
/// kernels see emu/emu.hpp's stand-ins for the CUDA built-ins) into `libyl_emu.a`, with the table of every
/// module's kernels that `yl_emu_launch` looks names up in. Only the tests link it (`#[link]` under `cfg(test)`).
fn build_emulator(kernel_dir: &Path, emu_dir: &Path, out_dir: &Path) -> Result<PathBuf, String> {
    let cxx = env::var("CXX").ok().filter(|v| !v.is_empty()).map(PathBuf::from).or_else(|| {
        ["c++", "g++", "clang++"].iter().find_map(|c| search_path(&format!("{c}{}", env::consts::EXE_SUFFIX)))
    });
    let cxx = cxx.ok_or("no host C++ compiler (c++, g++, clang++ or $CXX) to build the kernel emulator")?;
    let ar = env::var("AR").ok().filter(|v| !v.is_empty()).unwrap_or_else(|| "ar".to_string());
    let dir = out_dir.join("emu");
    fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        fs::write(&path, text).map(|()| path).map_err(|e| format!("cannot write {name} into OUT_DIR: {e}"))
    };

    let mut sources: Vec<PathBuf> = fs::read_dir(emu_dir)
        .map_err(|e| format!("cannot read {}: {e}", emu_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cpp"))
        .collect();
    sources.sort();
    // Each kernel file inside a generated one that appends its kernel list (so that `decltype` sees the kernels'
    // parameter types), then one table of every module's list.
    let mut modules = Vec::new();
    for src in kernel_sources(kernel_dir)? {
        let stem =
            src.file_stem().and_then(|s| s.to_str()).ok_or_else(|| format!("odd file name {}", src.display()))?;
        let text = fs::read_to_string(&src).map_err(|e| format!("cannot read {}: {e}", src.display()))?;
        let kernels = declared_kernels(&text).map_err(|e| format!("{}: {e}", src.display()))?;
        let module = format!("yl_emu_module_{stem}");
        sources.push(write(&format!("module_{stem}.cpp"), module_source(&src, &module, &kernels))?);
        modules.push(module);
    }
    sources.push(write("modules.cpp", module_table(&modules))?);

    let mut objects = Vec::new();
    for src in &sources {
        let obj = dir.join(format!("{}.o", src.file_stem().and_then(|s| s.to_str()).unwrap_or("x")));
        let out = Command::new(&cxx)
            .args(["-std=c++17", "-O2", "-ffp-contract=off", "-fno-exceptions", "-fno-rtti", "-fPIC"])
            .arg("-Wno-unknown-pragmas")
            .arg("-I")
            .arg(kernel_dir)
            .arg("-I")
            .arg(emu_dir)
            .args(["-include", "emu.hpp", "-x", "c++", "-c"])
            .arg(src)
            .arg("-o")
            .arg(&obj)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", cxx.display()))?;
        if !out.status.success() {
            return Err(format!(
                "the kernel emulator did not compile ({}):\n{}",
                src.display(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        objects.push(obj);
    }
    let lib = dir.join("libyl_emu.a");
    let _ = fs::remove_file(&lib);
    let out =
        Command::new(&ar).arg("crs").arg(&lib).args(&objects).output().map_err(|e| format!("cannot run {ar}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{ar} failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(dir)
}

/// The names of the `extern "C" __global__` kernels in a kernel file's text (`extern "C" __global__ void
/// [__launch_bounds__(…)] name(`), in order. Comment lines are skipped; a kernel that is not `extern "C"` is an
/// error (the GPU loader finds kernels by their unmangled names, and so does the emulator).
fn declared_kernels(source: &str) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    for (at, _) in source.match_indices("__global__") {
        let line = &source[source[..at].rfind('\n').map_or(0, |p| p + 1)..at];
        if line.trim_start().starts_with("//") {
            continue;
        }
        if !line.contains("extern \"C\"") {
            return Err(format!("a __global__ function that is not extern \"C\": `{}`", line.trim()));
        }
        let rest = source[at + "__global__".len()..].trim_start();
        let mut rest = rest.strip_prefix("void").ok_or("a kernel that does not return void")?.trim_start();
        if let Some(bounds) = rest.strip_prefix("__launch_bounds__") {
            let close = bounds.find(')').ok_or("an unclosed __launch_bounds__(")?;
            rest = bounds[close + 1..].trim_start();
        }
        let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        if name.is_empty() || !rest[name.len()..].trim_start().starts_with('(') {
            return Err(format!("cannot read the kernel name in `{}`", rest.lines().next().unwrap_or_default()));
        }
        names.push(name);
    }
    if names.is_empty() {
        return Err("defines no extern \"C\" __global__ kernel".into());
    }
    Ok(names)
}

/// A translation unit of the emulator: the kernel file, then `module`, the function that lists its kernels.
fn module_source(src: &Path, module: &str, kernels: &[String]) -> String {
    let mut s = format!(
        "// Generated by crates/cuda/build.rs for the kernel emulator. Do not edit.\n#include {:?}\n\n",
        src.display().to_string()
    );
    let _ = writeln!(s, "extern \"C\" const yl_emu::Kernel* {module}(size_t* count) {{");
    s.push_str("    static const yl_emu::Kernel kernels[] = {\n");
    for k in kernels {
        let _ = writeln!(s, "        yl_emu::kernel<&{k}>({k:?}),");
    }
    s.push_str("    };\n    *count = sizeof(kernels) / sizeof(kernels[0]);\n    return kernels;\n}\n");
    s
}

/// The emulator's table of modules.
fn module_table(modules: &[String]) -> String {
    let mut s = String::from("// Generated by crates/cuda/build.rs for the kernel emulator. Do not edit.\n\n");
    for m in modules {
        let _ = writeln!(s, "extern \"C\" const yl_emu::Kernel* {m}(size_t* count);");
    }
    s.push_str("\nconst yl_emu::Module yl_emu::kModules[] = {\n");
    for m in modules {
        let _ = writeln!(s, "    {m},");
    }
    let _ = writeln!(s, "}};\nconst size_t yl_emu::kModuleCount = {};", modules.len());
    s
}
