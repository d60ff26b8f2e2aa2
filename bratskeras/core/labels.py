"""The one place that maps BraTS labels <-> classes <-> regions, per label scheme.

Every scheme is a row of one table, `SCHEMES` (values, names, regions, the
official lesion-wise groups, the modalities, the case-folder prefixes); layouts,
inspection, synth, evaluation and inference read it, none of them branches on
a scheme's name.

Label schemes on disk (value: structure):
    brats2020 (2017-2021 releases): 1 NCR/NET, 2 ED, 4 ET
    brats2023 (2023 glioma GLI, SSA): 1 NCR (NETC), 2 ED (SNFH), 3 ET
    gli   (post-treatment glioma 2024+): 1 NETC, 2 SNFH, 3 ET, 4 RC (resection cavity)
    mets  (metastases 2023+):            1 NETC, 2 SNFH, 3 ET, 4 RC
    ped   (paediatric 2024+):            1 ET, 2 NETC, 3 CC (cyst), 4 ED
    men   (meningioma pre-operative):    1 NETC, 2 SNFH, 3 ET
    goat  (generalizability, GoAT):      1 NETC, 2 SNFH, 3 ET
    menrt (meningioma radiotherapy):     1 GTV; T1c is the only image
0 is background everywhere.

Classes (model outputs, cached labels) are the position of a value in the
scheme's `labels`. For brats2020 and brats2023 they are the classic four:
    0 background, 1 NCR (necrotic / non-enhancing core), 2 ED (edema), 3 ET
which the other 3-label schemes (men, goat) share; gli and mets add class 4
RC, ped's classes are its own values (1 ET, 2 NETC, 3 CC, 4 ED), menrt's are
0 background, 1 GTV.

Evaluation regions of the classic schemes, as channels in this order:
    WT whole tumor = {NCR, ED, ET}; TC tumor core = {NCR, ET}; ET = {ET}
Each scheme's `regions` lists its own (class indices); `lesion_groups` are
the groups of the official lesion-wise evaluation (the `brats-evaluation`
package's config_<task>.yaml, on-disk values): gli netc, snfh, et, rc,
tc = 1+3, wt = 1+2+3; mets et, rc, tc, wt; ped et = 1, netc = 2, cc = 3,
ed = 4, tc = 1+2+3, wt = 1+2+3+4; men (MenPre), goat (GoAT) and the 2023
glioma et, tc, wt; menrt gtv.

What the model trains on (classes, regions, whole tumor) and the way back
to classes are the training targets' table, bratskeras.core.targets.
"""

from dataclasses import dataclass

import numpy as np

from bratskeras.core.errors import DataError

CLASS_NAMES = ("background", "NCR", "ED", "ET")
REGIONS = ("WT", "TC", "ET")
# Which classes make up each region, in REGIONS order.
REGION_CLASSES = {"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)}
# The structures every metric reports, lower case in metric names and dict keys (evaluate, fit's Dice):
# the three regions and the two classes that are not regions; each as its classes (1 NCR, 2 ED, 3 ET).
REGION_KEYS = ("wt", "tc", "et")
STRUCTURES = ("wt", "tc", "et", "ncr", "ed")
STRUCTURE_CLASSES = {
    "wt": REGION_CLASSES["WT"],
    "tc": REGION_CLASSES["TC"],
    "et": REGION_CLASSES["ET"],
    "ncr": (1,),
    "ed": (2,),
}
ALL_MODALITIES = ("flair", "t1", "t1ce", "t2")
# Display colour (RGB in 0..1) of every structure a scheme names, shared by synonyms (the papers' NCR
# green, ED blue, ET magenta; NETC and SNFH are the 2023+ names of NCR and ED): `show` draws each
# scheme's classes by their names, never by class index.
STRUCTURE_COLOURS = {
    "NCR": (0.0, 0.8, 0.0), "NETC": (0.0, 0.8, 0.0),
    "ED": (0.0, 0.3, 1.0), "SNFH": (0.0, 0.3, 1.0),
    "ET": (1.0, 0.0, 1.0),
    "RC": (1.0, 0.85, 0.0),  # resection cavity: yellow
    "CC": (0.0, 0.9, 0.9),  # cyst: cyan
    "GTV": (1.0, 0.45, 0.0),  # radiotherapy target: orange
}


@dataclass(frozen=True)
class LabelScheme:
    """One task's labels: a row of the SCHEMES table.

    Attributes:
        name: the scheme's (task's) name, e.g. "gli".
        labels: labels[class_index] = value on disk (labels[0] = 0, background).
        names: names[class_index], e.g. ("background", "NETC", "SNFH", "ET", "RC").
        regions: ((region, class indices), ...) evaluated and trained as regions.
        lesion_groups: ((group, on-disk values), ...) of the official lesion-wise
            evaluation, in the official config's terms.
        official_config: the brats-evaluation config with these groups, or None.
        modalities: the images every case has (canonical names).
        prefixes: BraTS-<prefix>-... case folders that use this scheme unless a
            task is named (2023+ layout only).
        classic: classic[class_index] = the classic class (0 bg, 1 NCR, 2 ED,
            3 ET) it counts as in the voxel-wise WT/TC/ET metrics: RC is not
            tumor, a paediatric cyst is core (NCR), MEN-RT's GTV is core.
        is_task: a 2023+ task `--task` names (False: the 2017-2021 releases'
            scheme, which their folders name themselves).
        ambiguous: its folders may hold another task's labels, which `task`
            then names (2024 post-treatment glioma in BraTS-GLI folders).
        from_classic: from_classic[classic class] = the class a classic
            4-class model's output is written as in this scheme (ped: NCR ->
            NETC, ED -> ED, ET -> ET; MEN-RT: NCR and ET -> GTV, ED -> 0).
    """

    name: str
    labels: tuple
    names: tuple = CLASS_NAMES
    regions: tuple = tuple((r, REGION_CLASSES[r]) for r in REGIONS)
    lesion_groups: tuple = (("et", (3,)), ("tc", (1, 3)), ("wt", (1, 2, 3)))
    official_config: str | None = None
    modalities: tuple = ALL_MODALITIES
    prefixes: tuple = ()
    classic: tuple = (0, 1, 2, 3)
    from_classic: tuple = (0, 1, 2, 3)
    ambiguous: bool = False
    is_task: bool = True

    def lookup_table(self):
        """uint8 array mapping on-disk label value -> class index (255 = invalid)."""
        table = np.full(256, 255, dtype=np.uint8)
        for class_index, value in enumerate(self.labels):
            table[value] = class_index
        return table

    @property
    def colours(self):
        """{class index: RGB} of the scheme's structures (STRUCTURE_COLOURS by name), background left out."""
        return {index: STRUCTURE_COLOURS[name] for index, name in enumerate(self.names) if index}

    @property
    def region_names(self):
        """The regions' names in channel order, e.g. ("WT", "TC", "ET", "RC")."""
        return tuple(name for name, _ in self.regions)

    def region_composition(self):
        """(channel, class index) pairs that turn region masks back into classes, in write order.

        A region writes the one class it has that none of the regions inside
        it has (gli: WT -> SNFH, TC -> NETC, ET -> ET, RC -> RC; ped: WT -> ED,
        TC -> NETC, ET -> ET, CC -> CC). Regions that touch no other region
        (RC) are written first and the nested ones outermost first, each
        overwriting the last, so a voxel predicted both RC and tumor is tumor
        and every class map survives split -> compose unchanged.
        """
        members = [set(classes) for _, classes in self.regions]
        pairs = []
        for channel, classes in enumerate(members):
            inner = set().union(*(m for m in members if m < classes))
            own = classes - inner
            if len(own) != 1:
                raise ValueError(f"{self.name}: region {self.regions[channel][0]} has no single class of its own")
            alone = all(not (m & classes) for k, m in enumerate(members) if k != channel)
            pairs.append((not alone, -len(classes), channel, own.pop()))
        return tuple((channel, class_index) for *_, channel, class_index in sorted(pairs))

    def nesting(self):
        """(inner channel, outer channel) pairs where the inner region lies inside the outer (ET in TC).

        Ordered by the outer region's size, largest first, so that clipping
        each inner mask to its outer one in this order (postprocessing)
        clips an outer region before it is used: TC to WT, then ET to TC.
        """
        members = [set(classes) for _, classes in self.regions]
        pairs = [(i, o) for i, inner in enumerate(members) for o, outer in enumerate(members) if inner < outer]
        return tuple(sorted(pairs, key=lambda pair: -len(members[pair[1]])))

    @property
    def is_classic(self):
        """True when the classes are the classic four (0 bg, 1 NCR, 2 ED, 3 ET) that models train on."""
        return len(self.labels) == 4 and dict(self.regions) == REGION_CLASSES


_GLIOMA_NAMES = ("background", "NETC", "SNFH", "ET")
_POST_TREATMENT = dict(
    labels=(0, 1, 2, 3, 4), names=_GLIOMA_NAMES + ("RC",),
    regions=(("WT", (1, 2, 3)), ("TC", (1, 3)), ("ET", (3,)), ("RC", (4,))), classic=(0, 1, 2, 3, 0))

SCHEMES = {scheme.name: scheme for scheme in (
    LabelScheme("brats2020", (0, 1, 2, 4), lesion_groups=(("et", (4,)), ("tc", (1, 4)), ("wt", (1, 2, 4))),
                is_task=False),
    LabelScheme("brats2023", (0, 1, 2, 3), official_config="MenPre", prefixes=("GLI", "SSA"), ambiguous=True),
    LabelScheme("gli", **_POST_TREATMENT, official_config="gli", lesion_groups=(
        ("netc", (1,)), ("snfh", (2,)), ("et", (3,)), ("rc", (4,)), ("tc", (1, 3)), ("wt", (1, 2, 3)))),
    LabelScheme("mets", **_POST_TREATMENT, official_config="mets", prefixes=("MET",), lesion_groups=(
        ("et", (3,)), ("rc", (4,)), ("tc", (1, 3)), ("wt", (1, 2, 3)))),
    LabelScheme("ped", (0, 1, 2, 3, 4), names=("background", "ET", "NETC", "CC", "ED"),
                regions=(("WT", (1, 2, 3, 4)), ("TC", (1, 2, 3)), ("ET", (1,)), ("CC", (3,))),
                official_config="ped", prefixes=("PED",), classic=(0, 3, 1, 1, 2),
                from_classic=(0, 2, 4, 1), lesion_groups=(
                    ("et", (1,)), ("netc", (2,)), ("cc", (3,)), ("ed", (4,)), ("tc", (1, 2, 3)),
                    ("wt", (1, 2, 3, 4)))),
    LabelScheme("men", (0, 1, 2, 3), names=_GLIOMA_NAMES, official_config="MenPre", prefixes=("MEN",)),
    LabelScheme("goat", (0, 1, 2, 3), names=_GLIOMA_NAMES, official_config="GoAT", prefixes=("GoAT",)),
    LabelScheme("menrt", (0, 1), names=("background", "GTV"), regions=(("GTV", (1,)),),
                lesion_groups=(("gtv", (1,)),), official_config="MenRT", modalities=("t1ce",),
                prefixes=("MEN-RT",), classic=(0, 1), from_classic=(0, 1, 0, 1)),
)}
# A scheme whose classes and regions are the classic ones (brats2020's are the same, only ET's value differs):
# what a model without a task trains on.
CLASSIC_SCHEME = "brats2023"
# The 2023+ tasks, for --task (the 2017-2021 releases name themselves).
TASKS = tuple(name for name, scheme in SCHEMES.items() if scheme.is_task)


def scheme_for_prefix(prefix):
    """The scheme of BraTS-<prefix>-... case folders, or None for an unknown prefix."""
    for scheme in SCHEMES.values():
        if prefix in scheme.prefixes:
            return scheme.name
    return None


def scheme_or_classic(name):
    """The LabelScheme called `name`, or the classic one (CLASSIC_SCHEME) for None: a run without a task."""
    return get_scheme(CLASSIC_SCHEME if name is None else name)


def get_scheme(name):
    """Returns the LabelScheme called `name` (a key of SCHEMES), or `name` itself if it is one."""
    if isinstance(name, LabelScheme):
        return name
    if name not in SCHEMES:
        raise ValueError(f"unknown label scheme {name!r}; expected one of {sorted(SCHEMES)}")
    return SCHEMES[name]


def labels_to_classes(seg, scheme, source="segmentation"):
    """On-disk labels -> class indices.

    Args:
        seg: integer (or integral float) array of on-disk label values, any shape.
        scheme: scheme name or LabelScheme.
        source: file or case named in the error message.

    Returns:
        uint8 array of the same shape, values 0..3.

    Raises:
        DataError: a value outside the scheme (names the values and `source`).
    """
    scheme = get_scheme(scheme)
    values = np.asarray(seg)
    if values.dtype.kind == "f":
        values = integral_labels(values, source)
    bad = [int(v) for v in distinct_values(values) if v not in scheme.labels]
    if bad:
        raise ForeignLabelsError(out_of_scheme_message(source, bad, scheme), scheme.name, bad, source)
    return scheme.lookup_table()[values]


class ForeignLabelsError(DataError):
    """Label values outside a scheme (labels_to_classes); `scheme`, `values` and `source` say which.

    Callers that guessed the scheme from folder names (an ambiguous one:
    BraTS-GLI folders) can tell it from other data errors and refuse the
    whole dataset in one line instead of failing case by case.
    """

    def __init__(self, message, scheme, values, source):
        super().__init__(message)
        self.scheme = scheme
        self.values = tuple(values)
        self.source = source

    def __reduce__(self):
        # Raised in evaluate's worker processes: pickled with every field, not only the message.
        return type(self), (str(self), self.scheme, self.values, self.source)


def folder_twins(scheme, bad):
    """Tasks whose case folders look like ambiguous `scheme`'s and whose labels include `bad` (gli for brats2023).

    The tasks without a folder prefix of their own share their folders with
    the ambiguous scheme (2024 post-treatment glioma in BraTS-GLI folders).
    """
    scheme = get_scheme(scheme)
    if not scheme.ambiguous:
        return []
    return [t for t in TASKS if t != scheme.name and not SCHEMES[t].prefixes and set(bad) <= set(SCHEMES[t].labels)]


def out_of_scheme_message(source, bad, scheme):
    """The one-line problem for label values `bad` outside `scheme`, naming the tasks that have them.

    When `scheme` was read from folders another task shares (BraTS-GLI: 2023
    glioma or 2024 post-treatment gli), the line says which --task to pass.
    """
    scheme = get_scheme(scheme)
    others = [t for t in TASKS if t != scheme.name and set(bad) <= set(SCHEMES[t].labels)]
    hint = f" (a task whose scheme has them: {', '.join(others)})" if others else ""
    for twin in folder_twins(scheme, bad):
        hint += (f"; pass --task {twin} if these are {twin} cases ({', '.join(SCHEMES[twin].names[1:])}), "
                 "whose folders look the same")
    return f"{source}: label values {bad} are not in the {scheme.name} scheme {list(scheme.labels)}{hint}"


def integral_labels(values, source):
    """A label map as integers (integer input returned as is); DataError if a value is not an integer.

    min/max propagate NaN and show Inf, so two reductions replace an
    elementwise isfinite pass; int16 holds every BraTS label and halves the
    memory traffic of int64.
    """
    values = np.asarray(values)
    if values.dtype.kind in "iub":
        return values
    low, high = float(values.min()), float(values.max())
    if not (np.isfinite(low) and np.isfinite(high)):
        raise DataError(f"{source}: label map has non-integer values (NaN or Inf)")
    ints = values.astype(np.int16 if -32768 <= low and high <= 32767 else np.int64)
    if not np.array_equal(ints, values):
        raise DataError(f"{source}: label map has non-integer values")
    return ints


def distinct_values(values):
    """Sorted distinct values of an integer array.

    Label maps hold a handful of small values: counting them (bincount) is
    ~10x faster than sorting 9M voxels (np.unique) on a 240 x 240 x 155 map.
    """
    if values.size == 0:
        return np.zeros(0, np.int64)
    low, high = int(values.min()), int(values.max())
    if low >= 0 and high < 1024:
        return np.flatnonzero(np.bincount(values.ravel(), minlength=high + 1))
    return np.unique(values)


def detect_scheme(values, fallback, source):
    """Label scheme of a label map from its values: 4 -> brats2020, 3 -> brats2023.

    For files that carry no release name (predictions, flat label folders).

    Args:
        values: label map of any shape (integral values).
        fallback: scheme when neither 3 nor 4 is present (None: brats2020).
        source: file named in the error message.

    Raises:
        DataError: non-integer values, values outside {0, 1, 2, 3, 4}, or both 3 and 4.
    """
    present = {int(v) for v in distinct_values(integral_labels(values, source))}
    unknown = sorted(present - {0, 1, 2, 3, 4})
    if unknown:
        raise DataError(f"{source}: label values {unknown} are not BraTS labels (0, 1, 2 and 4 or 3)")
    if {3, 4} <= present:
        raise DataError(f"{source}: has both 3 and 4; BraTS uses 4 (2017-2021) or 3 (2023+) for ET")
    if 4 in present:
        return "brats2020"
    if 3 in present:
        return "brats2023"
    return fallback or "brats2020"


def label_map_to_classes(values, fallback, source):
    """A label map of unknown release -> (uint8 classes, the scheme detected from its values)."""
    values = integral_labels(values, source)
    scheme = detect_scheme(values, fallback, source)
    return labels_to_classes(values, scheme, source=source), scheme


def classes_to_labels(classes, scheme):
    """Class indices (0..3) -> on-disk label values of `scheme`, as uint8."""
    scheme = get_scheme(scheme)
    classes = np.asarray(classes)
    if classes.size and (classes.min() < 0 or classes.max() >= len(scheme.labels)):
        raise ValueError(f"class indices must be in 0..{len(scheme.labels) - 1}")
    return np.asarray(scheme.labels, dtype=np.uint8)[classes.astype(np.int64)]


def to_classic(classes, scheme):
    """A scheme's class indices -> the classic classes (LabelScheme.classic), uint8."""
    classic = get_scheme(scheme).classic
    if classic == tuple(range(len(classic))):
        return np.asarray(classes, dtype=np.uint8)
    return np.asarray(classic, dtype=np.uint8)[np.asarray(classes)]


def require_trainable(scheme, source, task=None):
    """DataError unless a run can train on a dataset of `scheme`.

    The classic four classes train as they are. The other schemes (the RC,
    CC and GTV classes of gli, mets, ped and menrt) train their own classes
    when the run names their task (TrainConfig.task, `fit --task`).
    """
    scheme = get_scheme(scheme)
    if task is not None and task != scheme.name:
        raise DataError(f"{source}: the cases use the {scheme.name} scheme, the run trains task {task}")
    if task is None and not scheme.is_classic:
        raise DataError(f"{source}: the {scheme.name} scheme ({', '.join(scheme.names[1:])}) has its own classes; "
                        f"pass --task {scheme.name} to train them")


def classic_to_labels(classes, scheme):
    """A classic 4-class model's classes (0 bg, 1 NCR, 2 ED, 3 ET) -> `scheme`'s on-disk values, uint8.

    How `predict` writes any task's labels with a model trained on the classic
    classes (LabelScheme.from_classic); the identity for 2017-2023 glioma.
    """
    scheme = get_scheme(scheme)
    return classes_to_labels(np.asarray(scheme.from_classic, dtype=np.uint8)[np.asarray(classes)], scheme)
