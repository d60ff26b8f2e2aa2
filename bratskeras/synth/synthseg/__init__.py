"""SynthSeg-style heads: random label maps painted with random contrasts through a random scanner.

SynthSeg (Billot et al., Medical Image Analysis 2023) trains a segmentation
network only on images synthesised from label maps, with the intensities of
each label drawn from Gaussian mixtures whose parameters are randomised, and
it then segments real scans of any contrast. FetalSynthSeg found that plain
Gaussian intensities beat physics-based simulation and that subdividing the
tissue classes by intensity clusters matters for robustness. This module
builds BraTS heads that way, on the MNI152 2009 template that the `anatomy`
extra ships (bratskeras.synth.anatomy.load_template):

1. a label map: the template's CSF (ventricles and sulci apart), grey and
   white matter, each parenchyma class cut into intensity clusters of the
   template's T1 (deep grey matter falls apart from cortex), deformed by a
   random affine and a strong smooth displacement field, with atrophy
   (wider sulci) and ventricles of varied size;
2. tumours as real gliomas come (TUMOUR_TYPES): ring-enhancing glioblastoma
   around necrosis, non-enhancing diffuse low-grade glioma, solid enhancing,
   cystic with a thin rim, patchy enhancement in a non-enhancing core; 1 to 3
   lesions, deep or cortical, 3-250 ml, pushing the tissue aside; oedema
   (two intensity clusters) spreading along white matter;
3. intensities per label and modality from Gaussians over wide ranges (and in
   a share of heads fully random healthy contrasts), keeping only the
   contrasts that define the BraTS classes (`Contrasts`): oedema bright on
   FLAIR and T2, enhancing tumour bright on T1c above every other tissue but
   enhancing vessels, necrosis and cysts dark on T1 and T1c; plus enhancing
   healthy structures (vessels, choroid plexus) that are not tumour;
4. acquisition: thick-slice or anisotropic blur, registration blur, partial
   volume, a smooth bias field, gamma, Rician noise, an arbitrary intensity
   scale, and an imperfect skull-stripping mask (a rim of dura left, or
   cortex cut off).

Each step is a `Transform`: a frozen dataclass that owns its options, checks
them when built, and draws from its own random stream, named after the step
(`stream`), so adding or removing a step changes no other step's draws. A
generator is a tuple of transforms (DEFAULT, HELDOUT) run in order over one
`Head`. The steps live in one module per stage: labelmap (1), tumours (2),
contrasts and mimics (3: tumour intensities; healthy structures that look
like tumour), acquisition (4); this package holds
the generators (GENERATORS) and `make_case`, and offers every step's name.

Arrays are (D, H, W) = NIfTI axes (i, j, k) on BraTS's grid (affine
diag(-1, -1, 1) times the voxel size), the brain centred in it.
"""

import numpy as np

from bratskeras.synth import anatomy
from bratskeras.synth.synthseg.acquisition import DuraAndScalp, LowResolution, Scanner, SkullStrip
from bratskeras.synth.synthseg.contrasts import (
    Contrasts,
    FadingOedema,
    FaintEnhancement,
    IsointenseEnhancement,
    SubtleT2Oedema,
)
from bratskeras.synth.synthseg.labelmap import (
    CLASS_OF,
    CSF,
    CYST,
    DURA,
    ENHANCING,
    GM_CLUSTERS,
    HEALTHY,
    LABELS,
    MODALITIES,
    NECROSIS,
    NON_ENHANCING,
    OEDEMA_A,
    OEDEMA_B,
    OUTSIDE,
    PARENCHYMA,
    SULCAL_CSF,
    VENTRICLE,
    VESSEL,
    WM_CLUSTERS,
    Atrophy,
    Head,
    Pose,
    VentricleShapes,
    Warp,
    stream,
    template_labels,
)
from bratskeras.synth.synthseg.mimics import (
    ChoroidPlexus,
    HealthyHyperintensities,
    UnsuppressedCSF,
    Vessels,
    VesselTubes,
)
from bratskeras.synth.synthseg.tumours import TUMOUR_TYPES, GrowTumours, Tumours

__all__ = [
    "CLASS_OF", "CSF", "CYST", "DURA", "ENHANCING", "GM_CLUSTERS", "HEALTHY", "LABELS", "MODALITIES", "NECROSIS",
    "NON_ENHANCING", "OEDEMA_A", "OEDEMA_B", "OUTSIDE", "PARENCHYMA", "SULCAL_CSF", "VENTRICLE", "VESSEL",
    "WM_CLUSTERS", "TUMOUR_TYPES", "Head", "stream", "template_labels",
    "Pose", "Tumours", "Warp", "Atrophy", "VentricleShapes", "GrowTumours", "Vessels", "VesselTubes", "Contrasts",
    "FaintEnhancement", "FadingOedema", "IsointenseEnhancement", "SubtleT2Oedema", "UnsuppressedCSF", "HealthyHyperintensities", "ChoroidPlexus", "SkullStrip", "DuraAndScalp", "LowResolution", "Scanner",
    "BASIC", "MIMICS", "DEFAULT", "FAINT", "FADING", "SUBTLE", "LOWRES", "PLEXUS", "HELDOUT", "GENERATORS", "make_case",
]


# The first stage of the shipped model's training, draw for draw (tools/train_pretrained.py): no enhancing
# mimics, few dura rims.
BASIC = (Pose(), Tumours(), Warp(), Atrophy(), GrowTumours(), Vessels(), Contrasts(), SkullStrip(), Scanner())
# BASIC with the enhancing mimics real T1c scans show (tubular vessels, an enhancing dura rim), more dura
# rims: the second stage.
MIMICS = (Pose(), Tumours(), Warp(), Atrophy(), GrowTumours(), Vessels(), VesselTubes(), Contrasts(),
          SkullStrip(dilate_share=0.5), DuraAndScalp(), Scanner())
# MIMICS with what real scans showed as false positives: ventricles of other shapes, FLAIR-bright healthy
# tissue (periventricular caps, cortical rim, white-matter spots, unsuppressed CSF), choroid plexus. Each step draws from its own stream, so
# these heads are MIMICS' heads with those two steps added.
DEFAULT = (Pose(), Tumours(), Warp(), Atrophy(), VentricleShapes(), GrowTumours(), Vessels(), VesselTubes(),
           Contrasts(), HealthyHyperintensities(), ChoroidPlexus(), SkullStrip(dilate_share=0.5), DuraAndScalp(),
           Scanner())
# Held-out heads: other ranges and another mix of tumours, to score on heads not drawn from the training ones.
HELDOUT = (Pose(rotation_degrees=15.0, scale=(0.8, 1.08)), Tumours(type_weights=(0.3, 0.3, 0.1, 0.15, 0.15),
                                                                  whole_ml=(5.0, 200.0), mass_effect=0.5),
           Warp(deformation_mm=10.0), Atrophy(sulci_mm=(0.0, 3.0), ventricles_mm=(-1.0, 6.0)), GrowTumours(),
           Vessels(count=(10, 50)), VesselTubes(count=(20, 50)), Contrasts(jitter=0.12, random_share=0.0),
           SkullStrip(dilate_share=0.3), DuraAndScalp(enhancing_share=0.5),
           Scanner(noise=(0.01, 0.05), scale=(100.0, 3000.0)))


def _with_steps(generator, *steps):
    """`generator` with each of its steps named as one of `steps` replaced by that step; the others, in order."""
    by_name = {step.name: step for step in steps}
    unknown = set(by_name) - {step.name for step in generator}
    if unknown:
        raise ValueError(f"no step named {', '.join(sorted(unknown))} to replace")
    return tuple(by_name.get(step.name, step) for step in generator)


def _with_inserted(generator, after, *steps):
    """`generator` with `steps` inserted, in order, right after its step named `after`; the others unchanged.

    Each step draws from its own stream (stream(seed, step.name)), so the
    derived generator's heads are the base's heads with those steps' effects
    added, draw for draw.
    """
    names = [step.name for step in generator]
    if after not in names:
        raise ValueError(f"no step named {after} to insert after")
    clashes = sorted({step.name for step in steps} & set(names))
    if clashes:
        raise ValueError(f"step {', '.join(clashes)} is already in the generator; replace it with _with_steps")
    at = names.index(after) + 1
    return generator[:at] + tuple(steps) + generator[at:]


# DEFAULT with enhancing tumour only moderately bright on T1c in half the heads (FaintEnhancement: where the
# stage-3 model missed real ET); DEFAULT's heads otherwise, draw for draw.
FAINT = _with_inserted(DEFAULT, "contrasts", FaintEnhancement())
# FAINT with oedema fading toward its edge on FLAIR and T2 (FadingOedema) and enhancing tumour near-isointense
# there (IsointenseEnhancement): where the stage-3 model under-segmented real tumours; FAINT's heads otherwise.
FADING = _with_inserted(FAINT, "faint_enhancement", FadingOedema(), IsointenseEnhancement())
# FADING with oedema only a little brighter than parenchyma on T2 (SubtleT2Oedema) and CSF that FLAIR nulled
# only in part (UnsuppressedCSF): where the stage-5 model missed oedema, and called CSF oedema, on 40 public real
# scans; FADING's heads otherwise, draw for draw.
SUBTLE = _with_inserted(_with_inserted(FADING, "isointense_enhancement", SubtleT2Oedema()),
                        "healthy_bright", UnsuppressedCSF())
# SUBTLE with one or two modalities in 30 % of the heads acquired at a low resolution (LowResolution: where the
# stage-5 model missed most of two BraTS 2013 tumours) and faint ET kept 2 standard deviations above the tumour
# around it (where the stage-7 model, trained on SUBTLE, called bright patches of non-enhancing tumour ET); SUBTLE's
# heads otherwise, draw for draw.
LOWRES = _with_inserted(_with_steps(SUBTLE, FaintEnhancement(margin_sd=2.0)), "dura", LowResolution())


# LOWRES with more non-enhancing gliomas (45 % of the heads instead of 25 %), more and thicker enhancing vessels
# and larger choroid plexus tufts (glomus-sized): where the shipped model, on 48 public real scans made
# non-enhancing (tools/remove_enhancement.py), called basal vessels, choroid plexus and a sinus ET once no real
# ET was left to dwarf them; LOWRES's heads otherwise, draw for draw, but for those four steps.
PLEXUS = _with_steps(LOWRES, Tumours(type_weights=(0.25, 0.45, 0.1, 0.1, 0.1)),
                     Vessels(count=(10, 60), radius_mm=(0.8, 3.0)), VesselTubes(count=(30, 90), radius_mm=(0.8, 3.0)),
                     ChoroidPlexus(tufts=(4, 12), radius_mm=(2.0, 6.0)))
GENERATORS = {"default": DEFAULT, "heldout": HELDOUT, "basic": BASIC, "mimics": MIMICS, "faint": FAINT,
              "fading": FADING, "subtle": SUBTLE, "lowres": LOWRES, "plexus": PLEXUS}


def make_case(shape=None, seed=0, transforms=DEFAULT, voxel_mm=1.0):
    """Generates one head.

    Args:
        shape: (D, H, W) voxels of `voxel_mm` (None: BraTS's 240 x 240 x 155
            mm field of view, anatomy.grid_shape); the brain is centred in it.
        seed: int or sequence of ints; each transform draws from stream(seed, its name).
        transforms: a tuple of transforms (DEFAULT, HELDOUT or your own) or a GENERATORS name.
        voxel_mm: isotropic voxel size in mm (0.5-4).

    Returns:
        images: dict modality -> int16 (D, H, W), 0 outside the skull-stripping mask.
        classes: uint8 (D, H, W): 0 background, 1 NCR/NETC, 2 ED, 3 ET.
    """
    if isinstance(transforms, str):
        if transforms not in GENERATORS:
            raise ValueError(f"unknown generator {transforms!r}; expected one of {', '.join(GENERATORS)}")
        transforms = GENERATORS[transforms]
    if not 0.5 <= voxel_mm <= 4.0:
        raise ValueError(f"voxel size must be 0.5-4 mm, got {voxel_mm}")
    shape = anatomy.grid_shape(voxel_mm) if shape is None else tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 8:
        raise ValueError(f"shape must be three sizes >= 8, got {shape}")
    head = Head(shape=shape, voxel_mm=float(voxel_mm))
    for transform in transforms:
        transform(head, stream(seed, transform.name))
    classes = np.zeros(shape, dtype=np.uint8)
    for label, cls in CLASS_OF.items():
        classes[head.labels == label] = cls
    return head.images, classes
