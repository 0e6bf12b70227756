//! Compiles every `cuda/*.cu` of the repository to PTX with nvcc and generates `$OUT_DIR/kernels.rs`, which embeds
//! the PTX text (include_str!) and is compiled only under `cfg(yolo_cuda_kernels)`.
//!
//! nvcc is looked for in `$NVCC`, then on `PATH`, then in `$CUDA_HOME/bin` (`scripts/install-nvcc.sh` installs one
//! from PyPI and prints the `NVCC=` line). Without nvcc, or when a kernel does not compile, the crate still builds,
//! CPU only, and says why in a cargo warning and in `availability()`; with `YOLO_LOSS_REQUIRE_CUDA=1` (CI) both are
//! hard errors instead, so that a kernel that stops compiling cannot slip through as a CPU-only build.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The lowest virtual architecture CUDA 13 still targets (Turing). PTX for it is JIT-compiled by the driver for
/// whatever GPU is present, so one build serves every GPU from sm_75 on.
const ARCH: &str = "compute_75";

/// Flags for every kernel. `--fmad=false`: the CPU backend is the reference and never fuses a*b+c, so neither do
/// the kernels (the assigner compares computed metrics; identical rounding keeps its choices identical more often).
/// No `--use_fast_math`: expf/log1pf must stay the accurate versions for the loss values to match the CPU's.
const NVCC_FLAGS: &[&str] = &["--ptx", "-O3", "-std=c++17", "--fmad=false"];

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

    // The CPU emulator of the detection kernels, for this crate's own tests (see emu/emu.hpp). Independent of
    // nvcc; without a host C++ compiler the emulator tests skip and say why.
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
            println!(
                "cargo::rustc-env=YOLO_LOSS_CUDA_BUILD_NOTE=kernels compiled to PTX ({ARCH}) by nvcc {}",
                built.release
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
}

/// Finds nvcc, compiles every kernel file and writes `kernels.rs`. Err: why the build is CPU only (first line a
/// one-sentence reason, further lines the compiler's output).
fn build_kernels(kernel_dir: &Path, out_dir: &Path) -> Result<Built, String> {
    let sources = kernel_sources(kernel_dir)?;
    let nvcc = find_nvcc()?;
    println!("cargo::rerun-if-changed={}", nvcc.display());
    let release = nvcc_release(&nvcc)?;

    // nvcc takes a second or two per file; run them side by side.
    let results: Vec<Result<Module, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> =
            sources.iter().map(|src| scope.spawn(|| compile(&nvcc, kernel_dir, src, out_dir))).collect();
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
    fs::write(out_dir.join("kernels.rs"), generated_rust(&modules, &release))
        .map_err(|e| format!("cannot write kernels.rs into OUT_DIR: {e}"))?;
    Ok(Built { release })
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

struct Module {
    /// File stem: `det_loss` for cuda/det_loss.cu.
    name: String,
    ptx_path: PathBuf,
    /// `.entry` names in the PTX (the `extern "C"` kernels).
    entries: Vec<String>,
}

fn compile(nvcc: &Path, kernel_dir: &Path, src: &Path, out_dir: &Path) -> Result<Module, String> {
    let name =
        src.file_stem().and_then(|s| s.to_str()).ok_or_else(|| format!("odd kernel file name {}", src.display()))?;
    let ptx_path = out_dir.join(format!("{name}.ptx"));
    let out = Command::new(nvcc)
        .args(NVCC_FLAGS)
        .arg(format!("-arch={ARCH}"))
        .arg("-I")
        .arg(kernel_dir)
        .arg("-o")
        .arg(&ptx_path)
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
    let ptx =
        fs::read_to_string(&ptx_path).map_err(|e| format!("nvcc wrote no readable PTX for {}: {e}", src.display()))?;
    let entries = ptx_entries(&ptx);
    if entries.is_empty() {
        return Err(format!("{} defines no extern \"C\" __global__ kernel (no .entry in its PTX)", src.display()));
    }
    Ok(Module { name: name.to_string(), ptx_path, entries })
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

fn generated_rust(modules: &[Module], release: &str) -> String {
    let mut s = String::from("// Generated by crates/cuda/build.rs from cuda/*.cu. Do not edit.\n\n");
    let _ = writeln!(s, "pub(crate) const NVCC_RELEASE: &str = {release:?};\n");
    s.push_str("pub(crate) const MODULES: &[PtxModule] = &[\n");
    for m in modules {
        let _ = writeln!(
            s,
            "    PtxModule {{ name: {:?}, ptx: include_str!({:?}), entries: &{:?} }},",
            m.name,
            m.ptx_path.display().to_string(),
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

/// Compiles emu/emu.cpp and every `cuda/det_*.cu` with the host C++ compiler (the kernels see emu/emu.hpp's
/// stand-ins for the CUDA built-ins) into `libyl_emu.a`. Only the tests link it (`#[link]` under `cfg(test)`).
fn build_emulator(kernel_dir: &Path, emu_dir: &Path, out_dir: &Path) -> Result<PathBuf, String> {
    let cxx = env::var("CXX").ok().filter(|v| !v.is_empty()).map(PathBuf::from).or_else(|| {
        ["c++", "g++", "clang++"].iter().find_map(|c| search_path(&format!("{c}{}", env::consts::EXE_SUFFIX)))
    });
    let cxx = cxx.ok_or("no host C++ compiler (c++, g++, clang++ or $CXX) to build the kernel emulator")?;
    let ar = env::var("AR").ok().filter(|v| !v.is_empty()).unwrap_or_else(|| "ar".to_string());
    let dir = out_dir.join("emu");
    fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut sources = vec![emu_dir.join("emu.cpp")];
    let mut kernels: Vec<PathBuf> = fs::read_dir(kernel_dir)
        .map_err(|e| format!("cannot read {}: {e}", kernel_dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| x == "cu")
                && p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("det_"))
        })
        .collect();
    kernels.sort();
    sources.extend(kernels);
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
