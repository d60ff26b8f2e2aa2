"""LAYOUTS: one row per release's on-disk layout, carrying how its cases are named, read and written.

A row (`Layout`) holds everything that differs between releases: the case
folders' pattern, each modality's file suffix, the separator, the extension,
the label file's suffix and scheme, the file format that reads a case and
writes one (bratskeras.data.formats), synth's case ids and folders, which
cases must have a label file, and the task prefixes named otherwise
(MEN-RT's <case>_t1c, <case>_gtv). Discovery (bratskeras.data.layouts),
reading (bratskeras.data.volumes), scoring (bratskeras.evaluate.scoring)
and synth (bratskeras.synth.writers) read the rows and never test a
layout's name. The file-name rules every row shares (`nifti_stem`,
`split_suffix`, `slice_file`) live here too.
"""

import os
import re
from dataclasses import dataclass, field, replace

from bratskeras.core import labels
from bratskeras.data import formats

MODALITIES = labels.ALL_MODALITIES


def _labelled_like_siblings(case, labelled_parents):
    """Unlabelled cases sit in a folder of their own: a case expects a label when a sibling case has one."""
    return os.path.dirname(case.folder) in labelled_parents


def _labelled_unless_validation(case, labelled_parents):
    """BraTS 2020 names its unlabelled cases BraTS20_Validation_NNN."""
    return "_Validation_" not in case.id


def _always_labelled(case, labelled_parents):
    """Every Kaggle H5 slice holds its mask."""
    return True


@dataclass(frozen=True)
class Layout:
    """One row of LAYOUTS: how a release names its case folders and files, and how they are read and written.

    A case's file is <case id><separator><suffix><extension> (`file_name`).

    Attributes:
        name: the layout's name (`--layout`).
        case_pattern: regular expression a case folder's name matches, or
            None for kaggle-h5 (flat slice files, no case folders); a group
            "prefix" names the case's task (labels.scheme_for_prefix).
        suffixes: canonical modality -> the file-name suffix of this release.
        reader: the file format (bratskeras.data.formats) that reads a case
            and writes one (synth).
        case_id: synth's case ids, a format of {index}, {number} (index + 1)
            and {prefix} (the task's case-folder prefix).
        folder: synth's case folder under the dataset root, a format of
            {case_id} and {grade} (HGG for even indices, LGG for odd ones).
        separator: between the case id and the suffix ("_" or "-").
        extension: of the files the release ships (".nii", ".nii.gz", ".h5").
        label_suffix: the label file's suffix.
        label_scheme: labels.SCHEMES name of the label files (2023+: the one
            of a case whose folder names no known task).
        odd_label: a label file name (stem) the release also uses, or None.
        expects_label: (case, folders holding labelled cases) -> whether the
            case must have a label file (`_mark_expected_labels`).
        side_files: files synth writes beside the case folders (a row per case).
        tasks: case-folder prefix -> the fields its cases name differently
            (MEN-RT's <case>_t1c and <case>_gtv); `for_prefix` applies them.
    """

    name: str
    case_pattern: re.Pattern | None
    suffixes: dict
    reader: object
    case_id: str
    folder: str = "{case_id}"
    separator: str = "_"
    extension: str = ".nii.gz"
    label_suffix: str = "seg"
    label_scheme: str = "brats2020"
    odd_label: re.Pattern | None = None
    expects_label: object = _labelled_like_siblings
    side_files: tuple = ()
    tasks: dict = field(default_factory=dict)

    @property
    def names_task(self):
        """True when the case folders' names carry their task (BraTS-<TASK>-...)."""
        return self.case_pattern is not None and "prefix" in self.case_pattern.groupindex

    def file_name(self, case_id, suffix):
        """"<case id><separator><suffix><extension>": a case's file of `suffix`."""
        return f"{case_id}{self.separator}{suffix}{self.extension}"

    def scheme_of(self, case_id):
        """The labels.SCHEMES name of a case's label file (2023+: from its folder's task prefix)."""
        match = self.case_pattern.match(case_id or "") if self.names_task else None
        return (match and labels.scheme_for_prefix(match.group("prefix"))) or self.label_scheme

    def for_prefix(self, prefix):
        """This row as the cases of task prefix `prefix` are named (`tasks`)."""
        return replace(self, **self.tasks.get(prefix, {}))

    def prefix_of(self, scheme):
        """The case-folder prefix of `scheme`'s cases (a labels.SCHEMES name or LabelScheme), "" for none.

        A scheme's first prefix; a scheme without one (gli: 2024 folders look
        like 2023's) takes this row's scheme's.
        """
        return (labels.get_scheme(scheme).prefixes or labels.get_scheme(self.label_scheme).prefixes or ("",))[0]

    def for_scheme(self, scheme):
        """This row as the cases of `scheme` are named (`for_prefix` of its prefix)."""
        return self.for_prefix(self.prefix_of(scheme))

    def synth_case_id(self, index, scheme):
        """The id synth gives case `index` of `scheme`, e.g. BraTS-MET-00003-000, BraTS-MEN-RT-0003-1."""
        return self.for_scheme(scheme).case_id.format(index=index, number=index + 1, prefix=self.prefix_of(scheme))


_OLD_SUFFIXES = {m: m for m in MODALITIES}
_NEW_SUFFIXES = {"flair": "t2f", "t1": "t1n", "t1ce": "t1c", "t2": "t2w"}
LAYOUTS = {layout.name: layout for layout in (
    Layout("brats2017", re.compile(r"^Brats1[78]_.+$|^BraTS19_.+$"), _OLD_SUFFIXES, formats.NIFTI_FILES,
           case_id="Brats17_SYN_{number:03d}_1", folder="{grade}/{case_id}"),
    # The Kaggle copy: uncompressed, case 355's label W39_1998.09.19_Segm.nii, csv files beside the cases.
    Layout("brats2020", re.compile(r"^BraTS20_(Training|Validation)_\d+$"), _OLD_SUFFIXES, formats.NIFTI_FILES,
           case_id="BraTS20_Training_{number:03d}",
           folder="BraTS2020_TrainingData/MICCAI_BraTS2020_TrainingData/{case_id}", extension=".nii",
           odd_label=re.compile(r"_Segm$", re.IGNORECASE), expects_label=_labelled_unless_validation,
           side_files=("name_mapping.csv", "survival_info.csv")),
    Layout("brats2021", re.compile(r"^BraTS2021_\d+$"), _OLD_SUFFIXES, formats.NIFTI_FILES,
           case_id="BraTS2021_{index:05d}"),
    # MEN-RT ships <case>_t1c and <case>_gtv (docs/reference.md section 5).
    Layout("brats2023", re.compile(r"^BraTS-(?P<prefix>[A-Za-z]+(?:-RT)?)-\d+(?:-\d+)?$"), _NEW_SUFFIXES,
           formats.NIFTI_FILES, case_id="BraTS-{prefix}-{index:05d}-000", separator="-", label_scheme="brats2023",
           tasks={"MEN-RT": {"case_id": "BraTS-MEN-RT-{index:04d}-1", "separator": "_", "label_suffix": "gtv"},
                  "GoAT": {"case_id": "BraTS-GoAT-{index:05d}"}}),
    Layout("kaggle-h5", None, {}, formats.H5_SLICES, case_id="volume_{number}",
           folder="BraTS2020_training_data/content/data", extension=".h5", expects_label=_always_labelled),
)}
NAMES = tuple(LAYOUTS)
# The one layout of flat slice files (no case folders): found by its file names, <case id>_slice_<s>.h5.
SLICES = next(layout for layout in LAYOUTS.values() if layout.case_pattern is None)
SLICES_RE = re.compile("^%s_slice_(?P<slice>\\d+)%s$" % (
    re.escape(SLICES.case_id).replace(re.escape("{number}"), r"(?P<volume>\d+)"), re.escape(SLICES.extension)))
# Every naming a case's files may follow: each row, and each row's task namings.
NAMINGS = [layout.for_prefix(prefix) for layout in LAYOUTS.values() for prefix in (None, *layout.tasks)]
MODALITY_OF_SUFFIX = {suffix: modality for layout in LAYOUTS.values()
                       for modality, suffix in layout.suffixes.items()}
LABEL_SUFFIXES = tuple(sorted({naming.label_suffix for naming in NAMINGS}))
_NIFTI_RE = re.compile(r"^(?P<stem>.+?)(?P<ext>\.nii(\.gz)?)$")
# A suffix follows any release's separator: the 2023+ releases use "-", older ones and MEN-RT "_".
_SUFFIX_RE = re.compile(
    r"[%s](?P<suffix>%s)$" % ("".join(sorted({re.escape(n.separator) for n in NAMINGS})),
                              "|".join(sorted({*MODALITY_OF_SUFFIX, *LABEL_SUFFIXES}, key=lambda s: (-len(s), s)))),
    re.IGNORECASE)
# A flat folder of label files (evaluate's references) names them <id> or <id>_seg, the classic naming.
FLAT_LABEL_SUFFIX = LAYOUTS["brats2021"].separator + LAYOUTS["brats2021"].label_suffix


def nifti_stem(name):
    """The file name `name` without its .nii / .nii.gz extension, or None for a name that is not NIfTI."""
    match = _NIFTI_RE.match(name)
    return match.group("stem") if match else None


def split_suffix(stem):
    """(what precedes the suffix, the modality or label suffix lower-cased) of a file's stem; (stem, None) without one."""
    match = _SUFFIX_RE.search(stem)
    return (stem[:match.start()], match.group("suffix").lower()) if match else (stem, None)


def slice_file(name):
    """(volume number, slice index) of a Kaggle H5 slice file's name, or None."""
    match = SLICES_RE.match(name)
    return (int(match.group("volume")), int(match.group("slice"))) if match else None
