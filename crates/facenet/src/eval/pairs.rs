//! Parsing LFW-style pairs files.
//!
//! `pairs.txt` (View 2): a header `folds n`, then per fold `n` same-person lines
//! `name i j` and `n` different-person lines `name1 i name2 j`. `pairsDevTrain.txt` /
//! `pairsDevTest.txt` (View 1): a header `n`, then `n` same and `n` different lines (one fold).
//! Folds are taken from this structure, never inferred from anything else.

use std::path::{Path, PathBuf};

use crate::error::{Error, ParseError, Result};

/// One image of a pair: person and 1-based image number.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageRef {
    /// Person (folder) name.
    pub person: String,
    /// Image number (LFW: `name_0001.jpg` is 1).
    pub number: u32,
}

impl ImageRef {
    /// The file stem, `Name_0001`.
    pub fn stem(&self) -> String {
        format!("{}_{:04}", self.person, self.number)
    }

    /// Finds the image under `root/person/` with any of the usual extensions.
    pub fn find(&self, root: &Path) -> Option<PathBuf> {
        ["jpg", "png", "jpeg"]
            .iter()
            .map(|ext| {
                root.join(&self.person)
                    .join(format!("{}.{ext}", self.stem()))
            })
            .find(|p| p.is_file())
    }
}

/// A labelled pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    /// First image.
    pub a: ImageRef,
    /// Second image.
    pub b: ImageRef,
    /// Same person?
    pub same: bool,
    /// Fold index (0-based).
    pub fold: usize,
}

/// All pairs of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pairs {
    /// Pairs in file order.
    pub pairs: Vec<Pair>,
    /// Number of folds.
    pub num_folds: usize,
}

impl Pairs {
    /// Reads a pairs file.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&text).map_err(|source| Error::Parse {
            path: path.into(),
            source,
        })
    }

    /// Parses pairs text; errors carry the 1-based line number.
    pub fn parse(text: &str) -> std::result::Result<Self, ParseError> {
        let mut lines = text
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.trim()))
            .filter(|(_, l)| !l.is_empty());
        let (hl, header) = lines.next().ok_or(ParseError::at(1, "empty pairs file"))?;
        let nums: Vec<usize> = header
            .split_whitespace()
            .map(|t| {
                t.parse()
                    .map_err(|_| ParseError::at(hl, format!("header `{header}` is not numeric")))
            })
            .collect::<std::result::Result<_, _>>()?;
        let (num_folds, per_half) = match nums.as_slice() {
            [n] => (1, *n),
            [f, n] => (*f, *n),
            _ => {
                return Err(ParseError::at(
                    hl,
                    format!("header `{header}`: expected `folds n` or `n`"),
                ));
            }
        };
        if num_folds == 0 || per_half == 0 {
            return Err(ParseError::at(hl, "header counts must be positive"));
        }
        // The header's counts are only believed as far as the lines go: a damaged header
        // must not reserve memory for pairs that are not there.
        let mut pairs = Vec::with_capacity(text.lines().count());
        for fold in 0..num_folds {
            for same in [true, false] {
                for _ in 0..per_half {
                    let (ln, l) = lines.next().ok_or(ParseError::at(
                        0,
                        format!(
                            "file ends early: header promises {num_folds} folds of {per_half} same + {per_half} different pairs"
                        ),
                    ))?;
                    pairs.push(parse_line(ln, l, same, fold)?);
                }
            }
        }
        if let Some((ln, l)) = lines.next() {
            return Err(ParseError::at(ln, format!("unexpected extra line `{l}`")));
        }
        Ok(Self { pairs, num_folds })
    }

    /// Only the first `k` folds.
    pub fn first_folds(mut self, k: usize) -> Self {
        let k = k.clamp(1, self.num_folds);
        self.pairs.retain(|p| p.fold < k);
        self.num_folds = k;
        self
    }

    /// Every image the pairs use, sorted, without repeats.
    pub fn images(&self) -> Vec<ImageRef> {
        let mut v: Vec<ImageRef> = self
            .pairs
            .iter()
            .flat_map(|p| [p.a.clone(), p.b.clone()])
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

fn parse_line(
    ln: usize,
    l: &str,
    same: bool,
    fold: usize,
) -> std::result::Result<Pair, ParseError> {
    let t: Vec<&str> = l.split_whitespace().collect();
    let num = |s: &str| {
        s.parse::<u32>()
            .map_err(|_| ParseError::at(ln, format!("`{s}` is not an image number in `{l}`")))
    };
    match (same, t.as_slice()) {
        (true, [name, i, j]) => Ok(Pair {
            a: ImageRef {
                person: name.to_string(),
                number: num(i)?,
            },
            b: ImageRef {
                person: name.to_string(),
                number: num(j)?,
            },
            same,
            fold,
        }),
        (false, [n1, i, n2, j]) => Ok(Pair {
            a: ImageRef {
                person: n1.to_string(),
                number: num(i)?,
            },
            b: ImageRef {
                person: n2.to_string(),
                number: num(j)?,
            },
            same,
            fold,
        }),
        (true, _) => Err(ParseError::at(
            ln,
            format!("expected a same-person line `name i j`, got `{l}`"),
        )),
        (false, _) => Err(ParseError::at(
            ln,
            format!("expected a different-person line `name1 i name2 j`, got `{l}`"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_FOLDS: &str = "2\t1\nA\t1\t2\nB\t1\tC\t3\nD\t2\t4\nE\t1\tF\t1\n";

    #[test]
    fn folds_come_from_the_structure() {
        let p = Pairs::parse(TWO_FOLDS).unwrap();
        assert_eq!(p.num_folds, 2);
        assert_eq!(p.pairs.len(), 4);
        assert_eq!(
            p.pairs.iter().map(|x| (x.same, x.fold)).collect::<Vec<_>>(),
            vec![(true, 0), (false, 0), (true, 1), (false, 1)]
        );
        assert_eq!(
            p.pairs[1].b,
            ImageRef {
                person: "C".into(),
                number: 3
            }
        );
        assert_eq!(p.pairs[0].a.stem(), "A_0001");
        assert_eq!(p.images().len(), 8); // A1 A2 B1 C3 D2 D4 E1 F1
    }

    #[test]
    fn view1_header_is_one_fold() {
        let p = Pairs::parse("1\nA 1 2\nB 1 C 1\n").unwrap();
        assert_eq!((p.num_folds, p.pairs.len()), (1, 2));
    }

    #[test]
    fn errors_name_the_line() {
        let e = Pairs::parse("1 1\nA 1\nB 1 C 1\n").unwrap_err();
        assert_eq!(e.line, 2);
        let e = Pairs::parse("1 1\nA 1 x\nB 1 C 1\n").unwrap_err();
        assert!(e.reason.contains("`x`"));
        let e = Pairs::parse("1 2\nA 1 2\n").unwrap_err();
        assert!(e.reason.contains("ends early"));
        let e = Pairs::parse("1 1\nA 1 2\nB 1 C 1\nextra\n").unwrap_err();
        assert_eq!(e.line, 4);
        assert!(Pairs::parse("").is_err());
    }

    #[test]
    fn real_lfw_header_counts() {
        // 10 folds x 300 + 300 lines, as in lfw-protocol/pairs.txt.
        let mut text = String::from("10\t300\n");
        for f in 0..10 {
            for k in 0..300 {
                text.push_str(&format!("P{f}\t{}\t{}\n", k + 1, k + 2));
            }
            for k in 0..300 {
                text.push_str(&format!("P{f}\t{}\tQ{f}\t{}\n", k + 1, k + 1));
            }
        }
        let p = Pairs::parse(&text).unwrap();
        assert_eq!(p.pairs.len(), 6000);
        assert_eq!(p.pairs[5999].fold, 9);
        assert_eq!(p.clone().first_folds(2).pairs.len(), 1200);
    }
}
