//! The ioctl side of a V4L2 stateful memory-to-memory encoder
//! (bcm2835-codec on a Pi ≤ 4, vicodec in the emulated board), behind
//! [`M2mDevice`] so that the encoder's logic (which controls, when, and what
//! comes back) is tested without a device.
//!
//! One picture is in flight at a time: roomcam queues it, then waits for its
//! coded buffer. A deeper queue would let the hardware overlap pictures, but
//! every picture queued ahead is a frame of latency, and the encoder keeps
//! up with the camera on its own (bcm2835-codec: 1080p30).

use std::collections::VecDeque;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use v4l2r::bindings;
use v4l2r::ioctl::{
    self, BufferFlags, Capabilities, Capability, FormatIterator, PlaneMapping, QBufPlane, QBuffer, QueryBuffer,
    V4l2Buffer,
};
use v4l2r::memory::{MemoryType, MmapHandle};
use v4l2r::{Format, PixelFormat, PlaneLayout, QueueType};

use super::{Control, M2mError};

/// Where and how the driver wants a raw picture laid out in an OUTPUT buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawLayout {
    pub width: u32,
    pub height: u32,
    /// Bytes from one luma line to the next (chroma lines: half of it).
    pub bytes_per_line: u32,
    /// The whole buffer: drivers pad lines and height (bcm2835-codec aligns
    /// the height to 16), which is where the chroma planes start from.
    pub size_image: u32,
}

/// One coded buffer the device returned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CodedBuffer {
    pub data: Vec<u8>,
    /// The driver's `V4L2_BUF_FLAG_KEYFRAME`.
    pub keyframe: bool,
}

/// What the encoder needs from a V4L2 memory-to-memory encoder device.
pub trait M2mDevice: Send {
    /// How logs and errors name the device (its path and card).
    fn label(&self) -> &str;
    /// Sets CAPTURE to the coded format, then OUTPUT to the raw one (the
    /// order the stateful encoder interface wants), and returns the
    /// OUTPUT layout the driver chose.
    fn set_formats(&mut self, coded: [u8; 4], raw: [u8; 4], width: u32, height: u32) -> Result<RawLayout, M2mError>;
    /// [`M2mError::ControlRejected`] when the device has no such control or
    /// refuses the value: callers decide whether they can do without it.
    fn set_control(&mut self, control: Control) -> Result<(), M2mError>;
    /// The frame rate the device's rate control budgets for.
    fn set_frame_rate(&mut self, fps: u32) -> Result<(), M2mError>;
    /// Allocates and maps the buffers and starts both queues.
    fn start(&mut self) -> Result<(), M2mError>;
    /// Queues one picture: `fill` writes it into the mapped OUTPUT buffer
    /// and returns how many bytes it used.
    fn queue_picture(&mut self, fill: &mut dyn FnMut(&mut [u8]) -> usize, timestamp: Duration) -> Result<(), M2mError>;
    /// Waits up to `timeout` for the next coded buffer.
    fn dequeue_coded(&mut self, timeout: Duration) -> Result<CodedBuffer, M2mError>;
}

/// A V4L2 node whose OUTPUT queue takes raw pictures and whose CAPTURE
/// queue gives `coded` (a stateful encoder).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncoderNode {
    pub path: PathBuf,
    pub card: String,
    pub driver: String,
    pub raw_formats: Vec<[u8; 4]>,
}

/// The memory-to-memory encoders under `dev_dir` that make `coded` from a
/// raw format, in node order.
pub fn find_encoders(dev_dir: &Path, coded: [u8; 4]) -> Vec<EncoderNode> {
    crate::media::devices::video_nodes(dev_dir)
        .into_iter()
        .filter_map(|(path, _)| probe_encoder(&path, coded).ok().flatten())
        .collect()
}

/// `Ok(None)`: the node is something else (a camera, a decoder).
pub fn probe_encoder(path: &Path, coded: [u8; 4]) -> Result<Option<EncoderNode>, M2mError> {
    let file = open_node(path)?;
    let caps: Capability =
        ioctl::querycap(&file).map_err(|e| M2mError::ioctl(path.display().to_string(), "VIDIOC_QUERYCAP", e))?;
    let Some((output, capture)) = queue_types(caps.device_caps()) else { return Ok(None) };
    let wanted = PixelFormat::from(&coded);
    if !FormatIterator::new(&file, capture).any(|f| f.pixelformat == wanted) {
        return Ok(None);
    }
    let raw_formats: Vec<[u8; 4]> = FormatIterator::new(&file, output)
        .filter(|f| !f.flags.contains(ioctl::FormatFlags::COMPRESSED))
        .map(|f| u32::from(f.pixelformat).to_le_bytes())
        .collect();
    if raw_formats.is_empty() {
        return Ok(None);
    }
    Ok(Some(EncoderNode { path: path.to_owned(), card: caps.card, driver: caps.driver, raw_formats }))
}

/// Opens a V4L2 node non-blocking: DQBUF then answers EAGAIN instead of
/// waiting, and [`poll_until`] does the waiting, with a deadline.
pub fn open_node(path: &Path) -> Result<File, M2mError> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| M2mError::Open { device: path.display().to_string(), reason: e.to_string() })
}

/// (OUTPUT, CAPTURE) queue types of a memory-to-memory node.
fn queue_types(caps: Capabilities) -> Option<(QueueType, QueueType)> {
    if caps.contains(Capabilities::VIDEO_M2M_MPLANE) {
        Some((QueueType::VideoOutputMplane, QueueType::VideoCaptureMplane))
    } else if caps.contains(Capabilities::VIDEO_M2M) {
        Some((QueueType::VideoOutput, QueueType::VideoCapture))
    } else {
        None
    }
}

/// REQBUFS `count` MMAP buffers on `queue` and maps each one's first plane;
/// the error names the ioctl that failed.
pub fn map_mmap_buffers(
    file: &File,
    queue: QueueType,
    count: u32,
) -> Result<Vec<PlaneMapping>, (&'static str, String)> {
    let granted: usize =
        ioctl::reqbufs(file, queue, MemoryType::Mmap, count).map_err(|e| ("VIDIOC_REQBUFS", e.to_string()))?;
    if granted == 0 {
        return Err(("VIDIOC_REQBUFS", "the driver granted no buffer".into()));
    }
    (0..granted)
        .map(|index| {
            let info: QueryBuffer =
                ioctl::querybuf(file, queue, index).map_err(|e| ("VIDIOC_QUERYBUF", e.to_string()))?;
            let plane = info.planes.first().ok_or(("VIDIOC_QUERYBUF", "a buffer without planes".to_string()))?;
            ioctl::mmap(file, plane.mem_offset, plane.length).map_err(|e| ("mmap", e.to_string()))
        })
        .collect()
}

/// Waits for `events` on `file` up to `deadline`; the events that came
/// (none: the deadline passed, or a signal interrupted the wait).
pub fn poll_until(file: &File, events: libc::c_short, deadline: Instant) -> std::io::Result<libc::c_short> {
    let left = deadline.saturating_duration_since(Instant::now());
    let mut fd = libc::pollfd { fd: file.as_raw_fd(), events, revents: 0 };
    let millis = left.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: one valid pollfd, for the duration of the call.
    if unsafe { libc::poll(&mut fd, 1, millis) } < 0 {
        let error = std::io::Error::last_os_error();
        return if error.kind() == std::io::ErrorKind::Interrupted { Ok(0) } else { Err(error) };
    }
    Ok(fd.revents)
}

/// Two OUTPUT buffers: one being encoded while the next picture is written.
const OUTPUT_BUFFERS: u32 = 2;
/// CAPTURE buffers: some drivers hand the parameter sets back in a buffer
/// of their own before the first picture, so one is not enough.
const CAPTURE_BUFFERS: u32 = 4;

/// A real device, through v4l2r's ioctl wrappers.
pub struct V4l2rDevice {
    file: File,
    label: String,
    output: QueueType,
    capture: QueueType,
    output_maps: Vec<PlaneMapping>,
    free_outputs: VecDeque<u32>,
    capture_maps: Vec<PlaneMapping>,
    streaming: bool,
}

impl V4l2rDevice {
    pub fn open(path: &Path) -> Result<Self, M2mError> {
        let file = open_node(path)?;
        let caps: Capability =
            ioctl::querycap(&file).map_err(|e| M2mError::ioctl(path.display().to_string(), "VIDIOC_QUERYCAP", e))?;
        let label = format!("{} ({})", path.display(), caps.card);
        let (output, capture) = queue_types(caps.device_caps()).ok_or_else(|| M2mError::Unsuitable {
            device: label.clone(),
            reason: "not a memory-to-memory device".into(),
        })?;
        Ok(Self {
            file,
            label,
            output,
            capture,
            output_maps: Vec::new(),
            free_outputs: VecDeque::new(),
            capture_maps: Vec::new(),
            streaming: false,
        })
    }

    fn fail(&self, what: &'static str, error: impl std::fmt::Display) -> M2mError {
        M2mError::ioctl(self.label.clone(), what, error)
    }

    fn map_buffers(&self, queue: QueueType, count: u32) -> Result<Vec<PlaneMapping>, M2mError> {
        map_mmap_buffers(&self.file, queue, count).map_err(|(what, reason)| self.fail(what, reason))
    }

    fn queue_capture(&self, index: u32) -> Result<(), M2mError> {
        let mut buffer = QBuffer::<MmapHandle>::new(self.capture, index);
        buffer.planes = vec![QBufPlane::new(0)];
        ioctl::qbuf::<_, ()>(&self.file, buffer).map_err(|e| self.fail("VIDIOC_QBUF (capture)", e))
    }

    /// Takes back every OUTPUT buffer the device is done with, without waiting.
    fn reclaim_outputs(&mut self) -> Result<(), M2mError> {
        loop {
            match ioctl::dqbuf::<V4l2Buffer>(&self.file, self.output) {
                Ok(buffer) => self.free_outputs.push_back(buffer.index()),
                Err(ioctl::IoctlConvertError::IoctlError(ioctl::DqBufIoctlError::NotReady)) => return Ok(()),
                Err(e) => return Err(self.fail("VIDIOC_DQBUF (output)", e)),
            }
        }
    }

    /// Waits for `events` on the device, up to `deadline`.
    fn wait(&self, events: libc::c_short, deadline: Instant) -> Result<bool, M2mError> {
        let revents = poll_until(&self.file, events, deadline).map_err(|e| self.fail("poll", e))?;
        if revents & libc::POLLERR != 0 && revents & events == 0 {
            return Err(self.fail("poll", "the device reports an error (was it removed?)"));
        }
        Ok(revents != 0)
    }
}

impl M2mDevice for V4l2rDevice {
    fn label(&self) -> &str {
        &self.label
    }

    fn set_formats(&mut self, coded: [u8; 4], raw: [u8; 4], width: u32, height: u32) -> Result<RawLayout, M2mError> {
        let mut capture: Format = ioctl::g_fmt(&self.file, self.capture).map_err(|e| self.fail("VIDIOC_G_FMT", e))?;
        capture.pixelformat = PixelFormat::from(&coded);
        capture.width = width;
        capture.height = height;
        // Room for an IDR at a high rate; drivers round it to their own.
        let coded_size = (width * height * 3 / 2).max(256 * 1024);
        capture.plane_fmt = vec![PlaneLayout { sizeimage: coded_size, bytesperline: 0 }];
        let capture: Format = ioctl::s_fmt(&mut self.file, (self.capture, &capture))
            .map_err(|e| self.fail("VIDIOC_S_FMT (capture)", e))?;
        if capture.pixelformat != PixelFormat::from(&coded) {
            return Err(M2mError::Unsuitable {
                device: self.label.clone(),
                reason: format!("it does not encode {}", String::from_utf8_lossy(&coded)),
            });
        }
        let output = Format { width, height, pixelformat: PixelFormat::from(&raw), plane_fmt: Vec::new() };
        let output: Format =
            ioctl::s_fmt(&mut self.file, (self.output, &output)).map_err(|e| self.fail("VIDIOC_S_FMT (output)", e))?;
        let plane = output.plane_fmt.first().map_or((0, 0), |p| (p.sizeimage, p.bytesperline));
        if output.pixelformat != PixelFormat::from(&raw) || output.width != width || output.height != height {
            return Err(M2mError::Unsuitable {
                device: self.label.clone(),
                reason: format!(
                    "it takes {}x{} {} where roomcam has {width}x{height} {}",
                    output.width,
                    output.height,
                    output.pixelformat,
                    String::from_utf8_lossy(&raw)
                ),
            });
        }
        Ok(RawLayout { width, height, bytes_per_line: plane.1, size_image: plane.0 })
    }

    fn set_control(&mut self, control: Control) -> Result<(), M2mError> {
        let (id, value) = control.id_and_value();
        ioctl::s_ctrl(&self.file, id, value).map(|_| ()).map_err(|e| M2mError::ControlRejected {
            device: self.label.clone(),
            control,
            reason: e.to_string(),
        })
    }

    fn set_frame_rate(&mut self, fps: u32) -> Result<(), M2mError> {
        // SAFETY: v4l2_streamparm is plain data; all-zero is a valid value.
        let mut parm: bindings::v4l2_streamparm = unsafe { std::mem::zeroed() };
        parm.type_ = self.output as u32;
        // `output` is the union member for an OUTPUT queue type.
        parm.parm.output.timeperframe = bindings::v4l2_fract { numerator: 1, denominator: fps.max(1) };
        ioctl::s_parm::<_, bindings::v4l2_streamparm>(&self.file, parm)
            .map(|_| ())
            .map_err(|e| self.fail("VIDIOC_S_PARM", e))
    }

    fn start(&mut self) -> Result<(), M2mError> {
        self.output_maps = self.map_buffers(self.output, OUTPUT_BUFFERS)?;
        self.free_outputs = (0..self.output_maps.len() as u32).collect();
        self.capture_maps = self.map_buffers(self.capture, CAPTURE_BUFFERS)?;
        ioctl::streamon(&self.file, self.output).map_err(|e| self.fail("VIDIOC_STREAMON (output)", e))?;
        ioctl::streamon(&self.file, self.capture).map_err(|e| self.fail("VIDIOC_STREAMON (capture)", e))?;
        self.streaming = true;
        for index in 0..self.capture_maps.len() as u32 {
            self.queue_capture(index)?;
        }
        Ok(())
    }

    fn queue_picture(&mut self, fill: &mut dyn FnMut(&mut [u8]) -> usize, timestamp: Duration) -> Result<(), M2mError> {
        let deadline = Instant::now() + Duration::from_secs(1);
        self.reclaim_outputs()?;
        while self.free_outputs.is_empty() {
            if !self.wait(libc::POLLOUT, deadline)? && Instant::now() >= deadline {
                return Err(M2mError::Timeout { device: self.label.clone(), what: "an OUTPUT buffer back" });
            }
            self.reclaim_outputs()?;
        }
        let index = self.free_outputs.pop_front().expect("checked non-empty");
        let used = fill(&mut self.output_maps[index as usize]);
        let mut buffer = QBuffer::<MmapHandle>::new(self.output, index)
            .set_timestamp(timestamp.as_secs() as libc::time_t, timestamp.subsec_micros() as libc::suseconds_t);
        buffer.planes = vec![QBufPlane::new(used)];
        ioctl::qbuf::<_, ()>(&self.file, buffer).map_err(|e| self.fail("VIDIOC_QBUF (output)", e))
    }

    fn dequeue_coded(&mut self, timeout: Duration) -> Result<CodedBuffer, M2mError> {
        let deadline = Instant::now() + timeout;
        loop {
            match ioctl::dqbuf::<V4l2Buffer>(&self.file, self.capture) {
                Ok(buffer) => {
                    let index = buffer.index();
                    let plane = buffer.get_first_plane();
                    let offset = plane.data_offset.copied().unwrap_or(0) as usize;
                    let used = *plane.bytesused as usize;
                    let flags = buffer.flags();
                    let map = self
                        .capture_maps
                        .get(index as usize)
                        .ok_or_else(|| self.fail("VIDIOC_DQBUF (capture)", format!("unknown buffer {index}")))?;
                    let data = map.get(offset..used.max(offset)).unwrap_or_default().to_vec();
                    self.queue_capture(index)?;
                    self.reclaim_outputs()?;
                    if flags.contains(BufferFlags::ERROR) {
                        return Err(self.fail("VIDIOC_DQBUF (capture)", "the driver flagged the coded buffer ERROR"));
                    }
                    return Ok(CodedBuffer { data, keyframe: flags.contains(BufferFlags::KEYFRAME) });
                }
                Err(ioctl::IoctlConvertError::IoctlError(ioctl::DqBufIoctlError::NotReady)) => {
                    if !self.wait(libc::POLLIN, deadline)? && Instant::now() >= deadline {
                        return Err(M2mError::Timeout { device: self.label.clone(), what: "a coded buffer" });
                    }
                }
                Err(e) => return Err(self.fail("VIDIOC_DQBUF (capture)", e)),
            }
        }
    }
}

impl Drop for V4l2rDevice {
    fn drop(&mut self) {
        if self.streaming {
            let _ = ioctl::streamoff(&self.file, self.capture);
            let _ = ioctl::streamoff(&self.file, self.output);
        }
        // Unmapped before the buffers are freed.
        self.output_maps.clear();
        self.capture_maps.clear();
        let _ = ioctl::reqbufs::<()>(&self.file, self.capture, MemoryType::Mmap, 0);
        let _ = ioctl::reqbufs::<()>(&self.file, self.output, MemoryType::Mmap, 0);
    }
}
