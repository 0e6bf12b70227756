//! The PTX that `build.rs` compiled from `cuda/*.cu`, embedded as text. Without nvcc at build time there is none,
//! and the reason why is kept for `availability()`.

/// One `cuda/<name>.cu` file compiled to PTX: loaded as one CUDA module.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PtxModule {
    /// File stem, e.g. `det_loss`.
    pub name: &'static str,
    pub ptx: &'static str,
    /// The `extern "C" __global__` kernels (`.entry` lines) of the module.
    pub entries: &'static [&'static str],
}

// Defines NVCC_RELEASE, MODULES and KERNEL_NAMES.
#[cfg(yolo_cuda_kernels)]
include!(concat!(env!("OUT_DIR"), "/kernels.rs"));

#[cfg(not(yolo_cuda_kernels))]
pub(crate) const NVCC_RELEASE: &str = "";
#[cfg(not(yolo_cuda_kernels))]
pub(crate) const MODULES: &[PtxModule] = &[];
#[cfg(not(yolo_cuda_kernels))]
pub(crate) const KERNEL_NAMES: &[&str] = &[];

/// Whether this build carries compiled CUDA kernels (nvcc was found and every `cuda/*.cu` compiled).
pub const KERNELS_BUILT: bool = cfg!(yolo_cuda_kernels);

/// What build.rs said about the kernels: how they were compiled, or why there are none.
pub(crate) const BUILD_NOTE: &str = env!("YOLO_LOSS_CUDA_BUILD_NOTE");

/// Names of the kernels embedded in this build, in `cuda/*.cu` file order; empty without kernels.
pub fn kernel_names() -> &'static [&'static str] {
    KERNEL_NAMES
}

/// The lowest `cuDriverGetVersion` value whose JIT accepts our PTX: a driver compiles the PTX ISA of its own CUDA
/// version and older, and nvcc writes the ISA of its release ("13.0" → 13000).
pub(crate) fn required_driver_version() -> Option<i32> {
    let (major, minor) = NVCC_RELEASE.split_once('.')?;
    Some(major.parse::<i32>().ok()? * 1000 + minor.parse::<i32>().ok()? * 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names the launchers ask the module loader for; each must be an entry of the embedded PTX.
    const LAUNCHED: &[(&str, &[&str])] = &[
        ("det_decode", &[crate::detection::run::DECODE]),
        ("det_assign", &[crate::detection::run::ASSIGN, crate::detection::run::RESOLVE, crate::detection::run::SCORES]),
        ("det_loss", &[crate::detection::run::CLASS, crate::detection::run::BOX]),
    ];

    #[test]
    fn kernels_built_matches_the_build_environment() {
        // CI sets YOLO_LOSS_REQUIRE_CUDA=1 (build.rs then fails instead of building without kernels); a valid NVCC
        // is the first place build.rs looks. Either way the kernels must be in.
        let required = std::env::var("YOLO_LOSS_REQUIRE_CUDA").is_ok_and(|v| v.trim() == "1");
        let nvcc_given = std::env::var_os("NVCC").is_some_and(|p| std::path::Path::new(&p).is_file());
        if required || nvcc_given {
            assert!(!kernel_names().is_empty(), "nvcc was available but the build has no kernels: {BUILD_NOTE}");
        }
        if KERNELS_BUILT {
            assert!(BUILD_NOTE.starts_with("kernels compiled to PTX"), "{BUILD_NOTE}");
            assert!(required_driver_version().is_some_and(|v| v >= 11000), "nvcc release {NVCC_RELEASE:?}");
        } else {
            assert!(kernel_names().is_empty() && MODULES.is_empty());
            assert!(BUILD_NOTE.contains("nvcc"), "the note should say what went wrong with nvcc: {BUILD_NOTE}");
            let mut err = std::io::stderr();
            let _ = std::io::Write::write_all(
                &mut err,
                format!("note: built without CUDA kernels: {BUILD_NOTE}\n").as_bytes(),
            );
        }
    }

    #[test]
    fn embedded_ptx_has_every_launched_kernel() {
        if !KERNELS_BUILT {
            return; // covered by the test above
        }
        for (module, names) in LAUNCHED {
            let m = MODULES.iter().find(|m| m.name == *module).unwrap_or_else(|| panic!("no PTX module {module}"));
            assert!(m.ptx.contains(".target sm_75"), "{module}: PTX not built for compute_75");
            for name in *names {
                assert!(m.entries.contains(name), "{module}: {name} missing from {:?}", m.entries);
                assert!(m.ptx.contains(&format!(".entry {name}(")), "{module}: no `.entry {name}(` in the PTX");
                assert!(kernel_names().contains(name));
            }
        }
        let launched: usize = LAUNCHED.iter().map(|(_, n)| n.len()).sum();
        assert_eq!(kernel_names().len(), launched, "a kernel in cuda/ has no launcher: {:?}", kernel_names());
    }
}
