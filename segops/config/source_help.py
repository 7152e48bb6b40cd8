"""The help texts of source and label fields (JSON schema descriptions), kept apart from the specs."""

EMPTY_HELP = (
    "Glob patterns (as a source's include) of inputs whose missing mask means an empty mask: no foreground, "
    "trained on and scored as such, e.g. ['good/**'] for MVTec AD's defect-free images. Other inputs without "
    "a mask are unlabelled (segmented, never trained on or scored)."
)

VOID_HELP = (
    "Stored value of 'void' pixels (Pascal VOC's 255 object borders): read as background (no class, no "
    "instance), before values/threshold; with ignore_void (mask-png), left out of the loss and the scores."
)

COLOURS_HELP = (
    "Colour-coded masks: '#rrggbb' → class, e.g. {'#000000': 0, '#ff0000': 1}. Transparent pixels are background; "
    "pixels of an unlisted colour (anti-aliased or JPEG edges) take the nearest listed colour's class, up to 5 % "
    "of a mask."
)

CLASS_FILES_HELP = (
    "More mask files per input, one binary mask per class: pattern → class (2, 3, …), for masks kept in a folder "
    "per class under the same names (Montgomery's ManualMask/leftMask/x.png and rightMask/x.png). Each is read as "
    "pattern's mask is; its foreground becomes that class, in the order listed (later on top). A missing one is "
    "that class absent; an input without pattern's mask is unlabelled."
)

REPLACE_HELP = (
    "Words of the input's path (without suffix) replaced before the pattern names its mask, for masks named "
    "with another word: {'volume': 'labels'} for ISBI 2012's train-volume.tif → train-labels.tif, "
    "{'leftImg8bit': 'gtFine_labelIds'} for Cityscapes. A key is not taken from inside a longer word "
    "({'sat': 'mask'} leaves a 'satellite/' folder alone)."
)

INCLUDE_HELP = (
    "Glob patterns on the path relative to the source folder (POSIX; '*' and '?' within one folder name, "
    "'**' for any number of folders, e.g. 'good/**', '**/*.jpg'); when given, only matching files are read."
)

EXCLUDE_HELP = "Glob patterns as for include; a matching file is never read (e.g. '**/README*', '**/DICOMDIR')."

GROUP_HELP = (
    "What a train/validation/test split keeps together: 'file' (each image file, the pages of a TIFF together), "
    "'folder' (the images of one folder: a part photographed from several sides, a patient's slices), or a "
    "regular expression with one capture group searched in the path relative to the source folder, the "
    "captured text naming the unit, e.g. '^(\\w+?)_\\d+\\.png$' (an image it does not match is its own unit)."
)

CLASS_STRIDE_HELP = (
    "Instance ids that encode their class: id = class × class_stride + object (Cityscapes' and KITTI-MOTS' "
    "instanceIds: 26001 is object 1 of class 26 with 1000). Values below the stride are regions without objects "
    "(stuff classes, crowds) and read as background; class_values maps the encoded classes (every one that "
    "occurs listed; 0 leaves a class out), else they are the classes as they are."
)
