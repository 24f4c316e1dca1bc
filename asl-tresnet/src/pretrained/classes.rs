//! Built-in class lists of the paper's multi-label datasets.

/// MS-COCO 2014: the 80 category names in category-id order (ids 1..90 with gaps).
pub const COCO: [&str; 80] = [
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "dining table",
    "toilet",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
];

/// Pascal VOC 2007: the 20 classes in alphabetical order.
pub const VOC: [&str; 20] = [
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
];

/// NUS-WIDE: the 81 concepts of `Concepts81.txt`, in its (alphabetical) order. A checkpoint's
/// own `idx_to_class` takes precedence over this list.
pub const NUS_WIDE: [&str; 81] = [
    "airport",
    "animal",
    "beach",
    "bear",
    "birds",
    "boats",
    "book",
    "bridge",
    "buildings",
    "cars",
    "castle",
    "cat",
    "cityscape",
    "clouds",
    "computer",
    "coral",
    "cow",
    "dancing",
    "dog",
    "earthquake",
    "elk",
    "fire",
    "fish",
    "flags",
    "flowers",
    "food",
    "fox",
    "frost",
    "garden",
    "glacier",
    "grass",
    "harbor",
    "horses",
    "house",
    "lake",
    "leaf",
    "map",
    "military",
    "moon",
    "mountain",
    "nighttime",
    "ocean",
    "person",
    "plane",
    "plants",
    "police",
    "protest",
    "railroad",
    "rainbow",
    "reflection",
    "road",
    "rocks",
    "running",
    "sand",
    "sign",
    "sky",
    "snow",
    "soccer",
    "sports",
    "statue",
    "street",
    "sun",
    "sunset",
    "surf",
    "swimmers",
    "tattoo",
    "temple",
    "tiger",
    "tower",
    "town",
    "toy",
    "train",
    "tree",
    "valley",
    "vehicle",
    "water",
    "waterfall",
    "wedding",
    "whales",
    "window",
    "zebra",
];

/// ImageNet-1k, `synset<TAB>lemma` per line in timm's order (see `data/README.md`).
const IMAGENET_1K: &str = include_str!("../../data/imagenet1k.tsv");
/// ImageNet-21K-P (MIIL fall11 subset, 11221 classes), same format.
const IMAGENET_21K_P: &str = include_str!("../../data/imagenet21k_p.tsv");

fn lemmas(tsv: &str) -> Vec<String> {
    tsv.lines()
        .map(|l| l.split_once('\t').map_or(l, |(_, lemma)| lemma).to_string())
        .collect()
}

/// The names of the built-in lists, as [`builtin`] accepts them.
pub const BUILTIN: [&str; 5] = ["coco", "voc", "nus-wide", "imagenet-1k", "imagenet-21k-p"];

/// A built-in list by name (`coco`, `voc`, `nus-wide`, `imagenet-1k`, `imagenet-21k-p`).
/// The ImageNet names are WordNet lemmas (`"tench, Tinca tinca"`) from timm's class info.
pub fn builtin(name: &str) -> Option<Vec<String>> {
    let list: &[&str] = match name.to_ascii_lowercase().as_str() {
        "coco" | "ms-coco" | "mscoco" => &COCO,
        "voc" | "pascal-voc" => &VOC,
        "nus-wide" | "nuswide" | "nus_wide" => &NUS_WIDE,
        "imagenet-1k" | "imagenet1k" | "in1k" => return Some(lemmas(IMAGENET_1K)),
        "imagenet-21k-p" | "imagenet21k-p" | "imagenet-21k" | "in21k" => {
            return Some(lemmas(IMAGENET_21K_P))
        }
        _ => return None,
    };
    Some(list.iter().map(|s| s.to_string()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_lists_have_their_sizes() {
        for (name, n, first) in [
            ("coco", 80, "person"),
            ("voc", 20, "aeroplane"),
            ("nus-wide", 81, "airport"),
            ("imagenet-1k", 1000, "tench, Tinca tinca"),
            ("imagenet-21k-p", 11221, "benthos"),
        ] {
            let list = builtin(name).unwrap_or_else(|| panic!("{name} is built in"));
            assert_eq!(list.len(), n, "{name}");
            assert_eq!(list[0], first, "{name}");
            assert!(list.iter().all(|c| !c.is_empty() && !c.contains('\t')));
        }
        assert!(BUILTIN.iter().all(|b| builtin(b).is_some()));
        assert!(builtin("imagenet-5k").is_none());
    }
}
