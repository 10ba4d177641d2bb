//! Diagnostics: user errors collected across stages and combined, so one build reports
//! every independent mistake (serde's `Ctxt` plus syn's `Error::combine`).

/// A collector of spanned user errors.
#[derive(Debug, Default)]
pub struct Diagnostics {
    errors: Vec<syn::Error>,
}

impl Diagnostics {
    /// Records one error.
    pub fn push(&mut self, error: syn::Error) {
        self.errors.push(error);
    }

    /// Number of errors so far.
    pub fn len(&self) -> usize {
        self.errors.len()
    }

    /// True when nothing went wrong.
    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// All errors as one `syn::Error`, or `None` when there are none.
    pub fn into_error(self) -> Option<syn::Error> {
        let mut errors = self.errors.into_iter();
        let mut first = errors.next()?;
        for e in errors {
            first.combine(e);
        }
        Some(first)
    }

    /// The messages, in order (handy in tests).
    pub fn messages(&self) -> Vec<String> {
        self.errors
            .iter()
            .flat_map(|e| e.clone().into_iter().map(|m| m.to_string()))
            .collect()
    }
}
