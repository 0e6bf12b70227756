//! The kernels that `build.rs` compiled from `cuda/*.cu`, embedded as one fatbin per file (SASS for every real
//! architecture the nvcc knew, PTX of the newest), and the rule by which a driver picks what runs from them on a
//! given GPU. Without nvcc at build time there are none, and the reason why is kept for `availability()`.

/// One `cuda/<name>.cu` file compiled to a fatbin: loaded as one CUDA module.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KernelModule {
    /// File stem, e.g. `det_loss`.
    pub name: &'static str,
    /// The fatbin as nvcc wrote it (`cuModuleLoadData` takes it as it is).
    pub fatbin: &'static [u8],
    /// The `extern "C" __global__` kernels (`.entry` lines of its PTX) of the module.
    pub entries: &'static [&'static str],
}

// Defines NVCC_RELEASE, SASS_ARCHS, PTX_ARCH, MODULES and KERNEL_NAMES.
#[cfg(yolo_cuda_kernels)]
include!(concat!(env!("OUT_DIR"), "/kernels.rs"));

#[cfg(not(yolo_cuda_kernels))]
pub(crate) const NVCC_RELEASE: &str = "";
#[cfg(not(yolo_cuda_kernels))]
pub(crate) const SASS_ARCHS: &[u32] = &[];
#[cfg(not(yolo_cuda_kernels))]
pub(crate) const PTX_ARCH: u32 = 0;
#[cfg(not(yolo_cuda_kernels))]
pub(crate) const MODULES: &[KernelModule] = &[];
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

/// The real architectures this build carries SASS for (`75` for sm_75), ascending; empty without kernels.
pub fn sass_architectures() -> &'static [u32] {
    SASS_ARCHS
}

/// Where the code that runs on a device comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelSource {
    /// Machine code built for `sm_<arch>`, loaded as it is.
    Sass { arch: u32 },
    /// The PTX of `compute_<arch>`, JIT-compiled for the device by the driver when the module is loaded (the
    /// driver caches the result on disk for later processes).
    Ptx { arch: u32 },
}

impl KernelSource {
    /// `"sass"` or `"ptx"`.
    pub fn as_str(self) -> &'static str {
        match self {
            KernelSource::Sass { .. } => "sass",
            KernelSource::Ptx { .. } => "ptx",
        }
    }

    /// `"sm_90"` (SASS) or `"compute_121"` (PTX): the part of the fatbin that runs.
    pub fn target(self) -> String {
        match self {
            KernelSource::Sass { arch } => format!("sm_{arch}"),
            KernelSource::Ptx { arch } => format!("compute_{arch}"),
        }
    }
}

/// A compute capability as an architecture number: (8, 6) → 86, (12, 1) → 121.
pub(crate) fn arch_number((major, minor): (i32, i32)) -> i64 {
    i64::from(major) * 10 + i64::from(minor)
}

/// What the driver runs from a fatbin with SASS for `sass` and PTX for `compute_<ptx>` on a device of compute
/// capability `cc`: SASS of the same major revision and the highest minor not above the device's (SASS for X.y
/// runs on every X.z with z ≥ y), otherwise the PTX when the device is at least as new as its virtual
/// architecture; None when neither runs there.
pub(crate) fn source_for(cc: (i32, i32), sass: &[u32], ptx: u32) -> Option<KernelSource> {
    let device = arch_number(cc);
    let same_major = |a: u32| i64::from(a) / 10 == i64::from(cc.0) && i64::from(a) <= device;
    if let Some(&arch) = sass.iter().filter(|&&a| same_major(a)).max() {
        return Some(KernelSource::Sass { arch });
    }
    (!sass.is_empty() && device >= i64::from(ptx)).then_some(KernelSource::Ptx { arch: ptx })
}

/// [`source_for`] with this build's fatbins; None also when the build has no kernels.
pub fn kernel_source(cc: (i32, i32)) -> Option<KernelSource> {
    source_for(cc, SASS_ARCHS, PTX_ARCH)
}

/// What actually runs, from `CU_FUNC_ATTRIBUTE_BINARY_VERSION` of a loaded kernel (10·major + minor of the code
/// the driver chose): one of our SASS architectures, or else code the driver JIT-compiled from our PTX.
pub(crate) fn loaded_source(binary_version: i32) -> KernelSource {
    match u32::try_from(binary_version).ok().filter(|v| SASS_ARCHS.contains(v)) {
        Some(arch) => KernelSource::Sass { arch },
        None => KernelSource::Ptx { arch: PTX_ARCH },
    }
}

/// nvcc's release as a `cuDriverGetVersion` value: "13.0" → 13000.
fn release_version(release: &str) -> Option<i32> {
    let (major, minor) = release.split_once('.')?;
    Some(major.parse::<i32>().ok()? * 1000 + minor.parse::<i32>().ok()? * 10)
}

/// The lowest `cuDriverGetVersion` that runs `source` of a build by nvcc `release`. SASS needs a driver of the
/// same CUDA major version, any minor (CUDA's minor-version compatibility: a 13.x cubin loads on every CUDA 13
/// driver). JIT needs a driver at least as new as the nvcc: a driver compiles the PTX ISA of its own CUDA
/// version and older only.
pub(crate) fn required_driver_version_for(source: KernelSource, release: &str) -> Option<i32> {
    let version = release_version(release)?;
    Some(match source {
        KernelSource::Sass { .. } => version / 1000 * 1000,
        KernelSource::Ptx { .. } => version,
    })
}

/// [`required_driver_version_for`] this build's nvcc.
pub(crate) fn required_driver_version(source: KernelSource) -> Option<i32> {
    required_driver_version_for(source, NVCC_RELEASE)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names the launchers ask the module loader for; each must be an entry of the embedded kernels.
    const LAUNCHED: &[(&str, &[&str])] = &[
        ("det_decode", &[crate::detection::run::DECODE]),
        ("det_assign", &[crate::detection::run::ASSIGN, crate::detection::run::RESOLVE, crate::detection::run::SCORES]),
        ("det_loss", &[crate::detection::run::CLASS, crate::detection::run::BOX]),
        ("cls", &[crate::classification::run::XENT]),
        ("pose", &[crate::pose::run::COUNT, crate::pose::run::KEYPOINTS]),
        ("seg_mask", crate::segmentation::KERNELS),
        ("obb", &[crate::obb::run::ASSIGN, crate::obb::run::RESOLVE, crate::obb::run::BOX]),
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
            assert!(BUILD_NOTE.starts_with("kernels compiled by nvcc"), "{BUILD_NOTE}");
            assert!(release_version(NVCC_RELEASE).is_some_and(|v| v >= 12000), "nvcc release {NVCC_RELEASE:?}");
            let mut err = std::io::stderr();
            let _ = std::io::Write::write_all(&mut err, format!("note: {BUILD_NOTE}\n").as_bytes());
        } else {
            assert!(kernel_names().is_empty() && MODULES.is_empty() && SASS_ARCHS.is_empty());
            assert!(BUILD_NOTE.contains("nvcc"), "the note should say what went wrong with nvcc: {BUILD_NOTE}");
            let mut err = std::io::stderr();
            let _ = std::io::Write::write_all(
                &mut err,
                format!("note: built without CUDA kernels: {BUILD_NOTE}\n").as_bytes(),
            );
        }
    }

    #[test]
    fn embedded_modules_have_every_launched_kernel() {
        if !KERNELS_BUILT {
            return; // covered by the test above
        }
        for (module, names) in LAUNCHED {
            let m = MODULES.iter().find(|m| m.name == *module).unwrap_or_else(|| panic!("no module {module}"));
            for name in *names {
                assert!(m.entries.contains(name), "{module}: {name} missing from {:?}", m.entries);
                assert!(kernel_names().contains(name));
            }
        }
        let launched: usize = LAUNCHED.iter().map(|(_, n)| n.len()).sum();
        assert_eq!(kernel_names().len(), launched, "a kernel in cuda/ has no launcher: {:?}", kernel_names());
    }

    /// One part of a fatbin: SASS (an ELF cubin) or PTX, for an architecture.
    #[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
    enum Part {
        Sass(u32),
        Ptx(u32),
    }

    /// The parts of a fatbin, read from its headers as nvcc 12/13 write them (fatbinary's format is not
    /// published; this reader is for the test only): a 16-byte header (magic 0xBA55ED50, version, header size,
    /// payload size), then per part a header with its kind at byte 0 (1 PTX, 2 ELF), its header size at 4, its
    /// payload size at 8 and its architecture at 28, followed by the payload.
    fn fatbin_parts(image: &[u8]) -> Vec<Part> {
        let u16_at = |o: usize| u16::from_le_bytes(image[o..o + 2].try_into().unwrap());
        let u32_at = |o: usize| u32::from_le_bytes(image[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_le_bytes(image[o..o + 8].try_into().unwrap()) as usize;
        assert_eq!(u32_at(0), 0xBA55_ED50, "not a fatbin");
        let start = usize::from(u16_at(6));
        let end = start + u64_at(8);
        assert_eq!(end, image.len(), "the fatbin's size field disagrees with its length");
        let mut parts = Vec::new();
        let mut at = start;
        while at < end {
            let arch = u32_at(at + 28);
            parts.push(match u16_at(at) {
                1 => Part::Ptx(arch),
                2 => Part::Sass(arch),
                kind => panic!("unknown fatbin part kind {kind} at byte {at}"),
            });
            at += u32_at(at + 4) as usize + u64_at(at + 8);
        }
        assert_eq!(at, end, "the parts do not end where the fatbin does");
        parts.sort();
        parts
    }

    #[test]
    fn every_fatbin_has_sass_for_each_architecture_and_the_newest_ptx() {
        if !KERNELS_BUILT {
            return;
        }
        assert_eq!(SASS_ARCHS.first(), Some(&75), "SASS from sm_75 (Turing) up: {SASS_ARCHS:?}");
        assert!(SASS_ARCHS.windows(2).all(|w| w[0] < w[1]), "ascending: {SASS_ARCHS:?}");
        assert_eq!(SASS_ARCHS.last(), Some(&PTX_ARCH), "PTX of the newest architecture");
        let mut want: Vec<Part> = SASS_ARCHS.iter().map(|&a| Part::Sass(a)).collect();
        want.push(Part::Ptx(PTX_ARCH));
        for m in MODULES {
            assert_eq!(fatbin_parts(m.fatbin), want, "cuda/{}.cu", m.name);
        }
        let bytes: usize = MODULES.iter().map(|m| m.fatbin.len()).sum();
        let sass: Vec<String> = SASS_ARCHS.iter().map(|a| format!("sm_{a}")).collect();
        let mut err = std::io::stderr();
        let _ = std::io::Write::write_all(
            &mut err,
            format!("note: fatbins {bytes} bytes in all; SASS {}; PTX compute_{PTX_ARCH}\n", sass.join(" ")).as_bytes(),
        );
    }

    #[test]
    fn the_driver_rule_picks_sass_of_the_same_major_else_ptx() {
        let sass = [75, 80, 86, 87, 88, 89, 90, 100, 103, 110, 120, 121];
        let pick = |cc| source_for(cc, &sass, 121);
        assert_eq!(pick((7, 5)), Some(KernelSource::Sass { arch: 75 }));
        assert_eq!(pick((8, 0)), Some(KernelSource::Sass { arch: 80 }));
        assert_eq!(pick((8, 9)), Some(KernelSource::Sass { arch: 89 }));
        assert_eq!(pick((9, 0)), Some(KernelSource::Sass { arch: 90 }));
        // A minor without SASS of its own runs the nearest lower minor of its major...
        assert_eq!(pick((8, 5)), Some(KernelSource::Sass { arch: 80 }));
        assert_eq!(pick((10, 1)), Some(KernelSource::Sass { arch: 100 }));
        assert_eq!(pick((12, 9)), Some(KernelSource::Sass { arch: 121 }));
        // ...never a higher minor or another major: a new major JITs the PTX, an old GPU runs nothing.
        assert_eq!(pick((13, 0)), Some(KernelSource::Ptx { arch: 121 }));
        assert_eq!(pick((7, 0)), None);
        assert_eq!(pick((6, 1)), None);
        // A major below the PTX's architecture but without SASS gets nothing (PTX does not run on older GPUs).
        assert_eq!(source_for((11, 0), &[75, 120], 120), None);
        assert_eq!(source_for((9, 0), &[], 0), None, "no kernels: nothing runs");
    }

    #[test]
    fn sass_runs_on_any_driver_of_the_nvcc_major_ptx_needs_the_nvcc_version() {
        let (sass, ptx) = (KernelSource::Sass { arch: 90 }, KernelSource::Ptx { arch: 121 });
        assert_eq!(required_driver_version_for(sass, "13.0"), Some(13000));
        assert_eq!(required_driver_version_for(sass, "13.2"), Some(13000));
        assert_eq!(required_driver_version_for(ptx, "13.2"), Some(13020));
        assert_eq!(required_driver_version_for(sass, "12.9"), Some(12000));
        assert_eq!(required_driver_version_for(ptx, "12.9"), Some(12090));
        assert_eq!(required_driver_version_for(ptx, ""), None);
        assert_eq!((sass.as_str(), sass.target()), ("sass", "sm_90".to_string()));
        assert_eq!((ptx.as_str(), ptx.target()), ("ptx", "compute_121".to_string()));
    }

    #[test]
    fn a_loaded_kernel_names_its_source_by_binary_version() {
        if !KERNELS_BUILT {
            return;
        }
        for &arch in SASS_ARCHS {
            assert_eq!(loaded_source(arch as i32), KernelSource::Sass { arch });
        }
        // A GPU newer than every SASS architecture runs code the driver compiled for it from the PTX.
        let newer = (PTX_ARCH / 10 + 1) * 10;
        assert_eq!(loaded_source(newer as i32), KernelSource::Ptx { arch: PTX_ARCH });
    }
}
