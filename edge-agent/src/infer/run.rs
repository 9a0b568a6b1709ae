//! One model run that allocates nothing on the Rust side.
//!
//! `Session::run` wraps its inputs and outputs in reference-counted Rust
//! values and collects them into vectors: 17 heap allocations a frame for
//! NanoDet. A [`ModelRun`] instead keeps, per session, an output buffer for
//! each of the model's outputs (sized for its largest batch) and the names
//! as C strings, and calls ONNX Runtime's C `Run` with tensors that view
//! those buffers: ONNX Runtime writes the results straight into them. The
//! only objects made per run are the C-side tensor headers, and ONNX
//! Runtime's own allocations come from its arena, reused run to run.
//!
//! Where a model leaves output sizes symbolic (an export with dynamic axes)
//! and every run has the same input shape (the detector, the fire model),
//! one run on zeros at load time sizes the buffers. Where that cannot be
//! known (a symbolic output of the pose model, whose input follows each
//! camera's aspect), runs fall back to `Session::run`; everything else is
//! the same to callers.

use std::ffi::{c_char, c_void, CStr, CString};
use std::ptr;

use ort::session::Session;
use ort::sys::{ONNXTensorElementDataType, OrtStatus, OrtValue};
use ort::AsPointer;

use super::InferError;

/// Most outputs a model may have here (NanoDet has six).
const MAX_OUTPUTS: usize = 8;
/// Most dimensions of an input or output tensor.
const MAX_DIMS: usize = 6;

/// The input of one run: a tensor's shape and its values.
#[derive(Debug, Clone, Copy)]
pub enum Input<'a> {
    F32(&'a [i64], &'a [f32]),
    I32(&'a [i64], &'a [i32]),
}

/// A session and the buffers its outputs go into.
pub struct ModelRun {
    session: Session,
    /// Where the buffers live (the CPU), made once: making one allocates.
    memory: ort::memory::MemoryInfo<'static>,
    input_name: CString,
    output_names: Vec<CString>,
    /// `None` where an output's size is not fixed: runs go through
    /// `Session::run` and its own buffers.
    fixed: Option<Vec<Output>>,
    /// The most items one run may carry (the batch).
    max_batch: usize,
    /// Items in the last run.
    items: usize,
    /// The plain path's results, copied out (reused buffers).
    plain: Vec<(Vec<i64>, Vec<f32>)>,
}

/// One output's buffer, sized for `max_batch` items.
struct Output {
    /// The output's shape with the batch dimension at index 0.
    shape: [i64; MAX_DIMS],
    dims: usize,
    /// Values per batch item.
    per_item: usize,
    data: Vec<f32>,
}

impl ModelRun {
    /// Wraps a session whose input 0 takes up to `max_batch` items.
    /// `model` names the file in errors. `probe`: the input shape every run
    /// will have, when it is fixed; outputs whose sizes the model leaves
    /// symbolic are then sized by one run on zeros of that shape.
    pub fn new(
        mut session: Session,
        max_batch: usize,
        model: &str,
        probe: Option<[i64; 4]>,
    ) -> Result<ModelRun, InferError> {
        let model_err = |message: String| InferError::Model { path: model.to_string(), message };
        let input = session.inputs().first().ok_or_else(|| model_err("has no inputs".into()))?;
        let input_name = CString::new(input.name()).map_err(|_| model_err("input name has a NUL byte".into()))?;
        let declared: Vec<(bool, Vec<i64>)> = session
            .outputs()
            .iter()
            .map(|o| {
                let f32 = matches!(
                    o.dtype(),
                    ort::value::ValueType::Tensor { ty: ort::value::TensorElementType::Float32, .. }
                );
                (f32, o.dtype().tensor_shape().map(|s| s.to_vec()).unwrap_or_default())
            })
            .collect();
        let symbolic = declared.iter().any(|(_, s)| s.iter().skip(1).any(|&d| d <= 0));
        let probed = match probe {
            Some(dims) if symbolic => probe_shapes(&mut session, dims)
                .map_err(
                    |e| tracing::warn!(model, error = %e, "sizing the outputs by a first run failed; runs allocate"),
                )
                .ok(),
            _ => None,
        };
        // A batch is only safe where every output carries the batch as its
        // first dimension: some exports declare a symbolic batch but reshape
        // to a fixed 1 inside. A run of two items says.
        let max_batch = match probe {
            Some(dims) if max_batch > 1 => match batch_shapes_ok(&mut session, dims) {
                Ok(true) => max_batch,
                Ok(false) | Err(_) => {
                    tracing::warn!(model, "a batch of 2 does not give 2 items in every output: each frame runs alone");
                    1
                }
            },
            _ => max_batch,
        };
        let mut output_names = Vec::new();
        // The preallocated path's arrays are fixed-size.
        let mut fixed = (session.outputs().len() <= MAX_OUTPUTS).then(Vec::new);
        for (i, o) in session.outputs().iter().enumerate() {
            output_names
                .push(CString::new(o.name()).map_err(|_| model_err(format!("output {:?} has a NUL byte", o.name())))?);
            let is_f32 = declared[i].0;
            let shape = probed.as_ref().and_then(|p| p.get(i).cloned()).unwrap_or_else(|| declared[i].1.clone());
            // The batch dimension may be symbolic; every other one must be known.
            let known = is_f32 && !shape.is_empty() && shape.len() <= MAX_DIMS && shape[1..].iter().all(|&d| d > 0);
            match (&mut fixed, known) {
                (Some(outs), true) => {
                    let per_item = shape[1..].iter().product::<i64>() as usize;
                    let mut dims = [0; MAX_DIMS];
                    dims[..shape.len()].copy_from_slice(&shape);
                    outs.push(Output {
                        shape: dims,
                        dims: shape.len(),
                        per_item,
                        data: vec![0.0; per_item * max_batch],
                    });
                }
                _ => fixed = None,
            }
        }
        Ok(ModelRun {
            session,
            memory: ort::memory::MemoryInfo::default(),
            input_name,
            output_names,
            fixed,
            max_batch,
            items: 0,
            plain: Vec::new(),
        })
    }

    /// Whether runs go through the preallocated path (no Rust allocation).
    pub fn preallocated(&self) -> bool {
        self.fixed.is_some()
    }

    /// The most items one run may carry: as asked, or 1 where the model
    /// turned out not to batch.
    pub(crate) fn max_batch(&self) -> usize {
        self.max_batch
    }

    /// Runs the model on `input`, whose first dimension is the batch.
    pub fn run(&mut self, input: Input<'_>) -> Result<(), InferError> {
        let items = match input {
            Input::F32(s, _) | Input::I32(s, _) => s.first().copied().unwrap_or(1).max(1) as usize,
        };
        if items > self.max_batch {
            return Err(InferError::Run(format!("a batch of {items} exceeds this session's {}", self.max_batch)));
        }
        let (shape, len) = match input {
            Input::F32(s, d) => (s, d.len()),
            Input::I32(s, d) => (s, d.len()),
        };
        if shape.iter().product::<i64>() != len as i64 || shape.iter().any(|&d| d < 0) {
            return Err(InferError::Run(format!("input shape {shape:?} does not match its {len} values")));
        }
        self.items = items;
        if let Some(outputs) = self.fixed.as_mut() {
            match run_fixed(
                &mut self.session,
                &self.memory,
                &self.input_name,
                &self.output_names,
                outputs,
                input,
                items,
            ) {
                Ok(()) => return Ok(()),
                // An output whose size the first run did not predict (one
                // that depends on the content, say): ONNX Runtime refuses
                // the preallocated buffer. Run the way `ort` does from now.
                Err(e) => {
                    tracing::warn!(error = %e, "a run into preallocated outputs failed; this session's runs allocate from now");
                    self.fixed = None;
                }
            }
        }
        let outs = match input {
            Input::F32(s, d) => {
                let t = ort::value::TensorRef::from_array_view((s.to_vec(), d)).map_err(run_err)?;
                self.session.run(ort::inputs![t])
            }
            Input::I32(s, d) => {
                let t = ort::value::TensorRef::from_array_view((s.to_vec(), d)).map_err(run_err)?;
                self.session.run(ort::inputs![t])
            }
        }
        .map_err(run_err)?;
        self.plain.resize_with(outs.len(), Default::default);
        for (i, (_, v)) in outs.iter().enumerate() {
            let (s, d) = &mut self.plain[i];
            s.clear();
            d.clear();
            // Outputs that are not f32 are never read: left empty.
            if let Ok((shape, data)) = v.try_extract_tensor::<f32>() {
                s.extend_from_slice(shape);
                d.extend_from_slice(data);
            }
        }
        Ok(())
    }

    /// Output `i` of the last run, all items.
    pub fn output(&self, i: usize) -> &[f32] {
        match &self.fixed {
            Some(outs) => outs.get(i).map_or(&[], |o| &o.data[..o.per_item * self.items]),
            None => self.plain.get(i).map_or(&[], |(_, d)| d),
        }
    }

    /// Output `i` of the last run for batch item `item`.
    pub(crate) fn output_item(&self, i: usize, item: usize) -> &[f32] {
        let all = self.output(i);
        let per = all.len() / self.items.max(1);
        all.get(item * per..(item + 1) * per).unwrap_or(&[])
    }

    /// The shape of output `i` in the last run (batch dimension included).
    pub fn output_shape(&self, i: usize, shape: &mut [i64; MAX_DIMS]) -> usize {
        match &self.fixed {
            Some(outs) => outs.get(i).map_or(0, |o| {
                shape[..o.dims].copy_from_slice(&o.shape[..o.dims]);
                shape[0] = self.items as i64;
                o.dims
            }),
            None => self.plain.get(i).map_or(0, |(s, _)| {
                let n = s.len().min(MAX_DIMS);
                shape[..n].copy_from_slice(&s[..n]);
                n
            }),
        }
    }
}

/// Whether a run of two items on zeros gives every output a first
/// dimension of 2 and the per-item size of a one-item run (load time only).
fn batch_shapes_ok(session: &mut Session, dims: [i64; 4]) -> Result<bool, ort::Error> {
    let one = probe_shapes(session, dims)?;
    let mut two_dims = dims;
    two_dims[0] = 2;
    let two = probe_shapes(session, two_dims)?;
    Ok(one.len() == two.len()
        && one.iter().zip(&two).all(|(a, b)| a.len() == b.len() && b.first() == Some(&2) && a[1..] == b[1..]))
}

/// The output shapes of one run on zeros of shape `dims` (load time only).
fn probe_shapes(session: &mut Session, dims: [i64; 4]) -> Result<Vec<Vec<i64>>, ort::Error> {
    let zeros = vec![0.0f32; dims.iter().product::<i64>().max(0) as usize];
    let input = ort::value::TensorRef::from_array_view((dims.to_vec(), &zeros[..]))?;
    let outs = session.run(ort::inputs![input])?;
    Ok(outs.iter().map(|(_, v)| v.dtype().tensor_shape().map(|s| s.to_vec()).unwrap_or_default()).collect())
}

fn run_err(e: ort::Error) -> InferError {
    InferError::Run(e.to_string())
}

/// The C-side tensors of one run, released however the run ends.
struct Values([*mut OrtValue; MAX_OUTPUTS + 1]);

impl Drop for Values {
    fn drop(&mut self) {
        for v in self.0 {
            if !v.is_null() {
                // SAFETY: each non-null entry was created by
                // CreateTensorWithDataAsOrtValue and is released once, here.
                unsafe { (ort::api().ReleaseValue)(v) };
            }
        }
    }
}

/// Turns an ONNX Runtime status into a result (null is success).
fn check(status: *mut OrtStatus) -> Result<(), InferError> {
    if status.is_null() {
        return Ok(());
    }
    // SAFETY: a non-null status from the C API carries a NUL-terminated
    // message valid until the status is released, which happens right after
    // it is copied.
    let message = unsafe {
        let text = CStr::from_ptr((ort::api().GetErrorMessage)(status)).to_string_lossy().into_owned();
        (ort::api().ReleaseStatus)(status);
        text
    };
    Err(InferError::Run(message))
}

/// A C tensor viewing `len` elements at `data`.
///
/// SAFETY (for callers): `data` must hold `len` elements of `ty`, stay
/// valid and unmoved until the value is released, and not be written
/// through any other path while ONNX Runtime uses it.
unsafe fn view(
    memory: &ort::memory::MemoryInfo,
    data: *mut c_void,
    bytes: usize,
    shape: &[i64],
    ty: ONNXTensorElementDataType,
) -> Result<*mut OrtValue, InferError> {
    let mut value: *mut OrtValue = ptr::null_mut();
    let status = unsafe {
        (ort::api().CreateTensorWithDataAsOrtValue)(
            memory.ptr(),
            data,
            bytes,
            shape.as_ptr(),
            shape.len(),
            ty,
            &mut value,
        )
    };
    check(status.0)?;
    Ok(value)
}

fn run_fixed(
    session: &mut Session,
    memory: &ort::memory::MemoryInfo,
    input_name: &CStr,
    output_names: &[CString],
    outputs: &mut [Output],
    input: Input<'_>,
    items: usize,
) -> Result<(), InferError> {
    let mut values = Values([ptr::null_mut(); MAX_OUTPUTS + 1]);
    let (shape, data, bytes, ty) = match input {
        Input::F32(s, d) => (
            s,
            d.as_ptr() as *mut c_void,
            std::mem::size_of_val(d),
            ONNXTensorElementDataType::ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT,
        ),
        Input::I32(s, d) => (
            s,
            d.as_ptr() as *mut c_void,
            std::mem::size_of_val(d),
            ONNXTensorElementDataType::ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32,
        ),
    };
    let want: i64 = shape.iter().product();
    if want < 0 || want as usize * 4 != bytes {
        return Err(InferError::Run(format!("input shape {shape:?} does not match its {} values", bytes / 4)));
    }
    // SAFETY: the input slice is borrowed for this whole call and ONNX
    // Runtime only reads an input; the value is released (by `values`)
    // before the borrow ends.
    values.0[0] = unsafe { view(memory, data, bytes, shape, ty)? };
    for (i, out) in outputs.iter_mut().enumerate() {
        let mut dims = out.shape;
        dims[0] = items as i64;
        let len = out.per_item * items;
        // SAFETY: the buffer holds `per_item * max_batch` ≥ `len` values,
        // is borrowed mutably for this whole call (no other reader or
        // writer), and its value is released before the borrow ends.
        values.0[i + 1] = unsafe {
            view(
                memory,
                out.data.as_mut_ptr() as *mut c_void,
                len * 4,
                &dims[..out.dims],
                ONNXTensorElementDataType::ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT,
            )?
        };
    }
    let n = outputs.len();
    let mut names: [*const c_char; MAX_OUTPUTS] = [ptr::null(); MAX_OUTPUTS];
    for (slot, name) in names.iter_mut().zip(output_names) {
        *slot = name.as_ptr();
    }
    let input_names = [input_name.as_ptr()];
    let inputs = [values.0[0] as *const OrtValue];
    let mut outs: [*mut OrtValue; MAX_OUTPUTS] = [ptr::null_mut(); MAX_OUTPUTS];
    outs[..n].copy_from_slice(&values.0[1..=n]);
    // SAFETY: the session is borrowed mutably (`Run` is not re-entrant on
    // one session); the name and value arrays are live locals of the right
    // lengths; the output values are preallocated, so ONNX Runtime writes
    // into them and does not replace the pointers, which `values` releases.
    let status = unsafe {
        (ort::api().Run)(
            session.ptr_mut(),
            ptr::null(),
            input_names.as_ptr(),
            inputs.as_ptr(),
            1,
            names.as_ptr(),
            n,
            outs.as_mut_ptr(),
        )
    };
    check(status.0)?;
    let mut replaced = None;
    for (i, &out) in outs[..n].iter().enumerate() {
        if out != values.0[i + 1] {
            // SAFETY: ONNX Runtime handed back a value of its own; it is
            // ours to release (ours is still released by `values`).
            unsafe { (ort::api().ReleaseValue)(out) };
            replaced.get_or_insert(i);
        }
    }
    match replaced {
        Some(i) => Err(InferError::Run(format!("ONNX Runtime did not write output {i} into its preallocated buffer"))),
        None => Ok(()),
    }
}
