//! The built-in backends of `lienthong demo`: three small JSON services with Vietnamese sample
//! data that the demo's nodes call as service backends.
//!
//! - population (Bộ Công an, Cơ sở dữ liệu quốc gia về dân cư): `GET /cong-dan/{so_dinh_danh}`
//! - business (Bộ Tài chính, Cổng thông tin quốc gia về đăng ký doanh nghiệp):
//!   `GET /doanh-nghiep/{ma_so_thue}`
//! - civil status (Sở Tư pháp tỉnh Nghệ An, đăng ký khai sinh): `GET /khai-sinh/{so}`
//!
//! `GET /` describes the service. Every answer is JSON; an unknown record is 404, a malformed
//! identifier 400, another method 405, another path 404. Query strings and request bodies are
//! ignored.
//!
//! All the data is fictional.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use lienthong_runtime::{Conn, Protocols, ServeOptions};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// How long `shutdown` waits for answers in progress before cutting connections.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// A client has this long to send a request's head.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Open connections per backend at most; more are closed at once.
const MAX_CONNECTIONS: usize = 512;

/// Sample citizen ids (số định danh cá nhân) the demo's traffic uses; all are in the data.
pub(crate) const CITIZEN_IDS: &[&str] = &[
    "001099012345",
    "001185023456",
    "079090134567",
    "048192245678",
    "040088356789",
    "040301467890",
    "040205578901",
    "042176689012",
    "038067790123",
    "046195801234",
    "092083912340",
    "031300023457",
];

/// Sample enterprise tax codes (mã số thuế doanh nghiệp); all are in the data.
pub(crate) const TAX_CODES: &[&str] = &[
    "0108456729",
    "2900774218",
    "2901487350",
    "0202174633",
    "0315982409",
    "0401963287",
    "3000529173",
    "1800736457",
];

/// Sample birth-registration numbers (`KS-<year>-<6 digits>`); all are in the data.
pub(crate) const BIRTH_RECORDS: &[&str] = &[
    "KS-2023-000125",
    "KS-2023-000348",
    "KS-2024-000052",
    "KS-2024-000417",
    "KS-2025-000231",
    "KS-2025-000389",
];

/// The demo's backends, running until dropped or `shutdown`.
#[derive(Debug)]
pub struct Backends {
    pub population: SocketAddr,
    pub business: SocketAddr,
    pub civil_status: SocketAddr,
    stop: watch::Sender<bool>,
    /// The accept loops; each owns its connections, so aborting one ends them too.
    tasks: Vec<JoinHandle<()>>,
}

impl Backends {
    /// Starts all three on 127.0.0.1, each on the port given (0 = any free port), in the
    /// order population, business, civil status.
    pub async fn start(ports: [u16; 3]) -> io::Result<Backends> {
        Self::start_capped(ports, MAX_CONNECTIONS).await
    }

    /// [`Self::start`] with at most `max_connections` open per backend.
    async fn start_capped(ports: [u16; 3], max_connections: usize) -> io::Result<Backends> {
        let [population, business, civil_status] = ports;
        // All binds before any task, so a failure leaves nothing running.
        let listeners = [
            (Service::Population, TcpListener::bind((Ipv4Addr::LOCALHOST, population)).await?),
            (Service::Business, TcpListener::bind((Ipv4Addr::LOCALHOST, business)).await?),
            (Service::CivilStatus, TcpListener::bind((Ipv4Addr::LOCALHOST, civil_status)).await?),
        ];
        let [population, business, civil_status] =
            [listeners[0].1.local_addr()?, listeners[1].1.local_addr()?, listeners[2].1.local_addr()?];
        let (stop, stopped) = watch::channel(false);
        let tasks = listeners
            .into_iter()
            .map(|(service, listener)| {
                tokio::spawn(serve(listener, service, max_connections, stopped.clone()))
            })
            .collect();
        Ok(Backends { population, business, civil_status, stop, tasks })
    }

    /// Stops accepting, lets answers in progress finish (idle connections close at once), and
    /// after a bounded wait cuts whatever is left.
    pub async fn shutdown(mut self) {
        // Fails only when every loop has already ended.
        let _ = self.stop.send(true);
        let _ = timeout(SHUTDOWN_GRACE, async {
            for task in &mut self.tasks {
                let _ = task.await;
            }
        })
        .await;
        // Dropping `self` aborts anything still running.
    }
}

impl Drop for Backends {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Resolves once a stop is asked for, or the `Backends` are gone.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// Serves `service` on `listener` until `stop` is set; connections in progress finish their
/// answer (HTTP/1.1, keep-alive) within the grace.
async fn serve(
    listener: TcpListener,
    service: Service,
    max_connections: usize,
    mut stop: watch::Receiver<bool>,
) {
    let per_connection = move |_: &Conn| {
        Some(hyper::service::service_fn(move |req| async move {
            Ok::<_, std::convert::Infallible>(respond(service, &req))
        }))
    };
    let options = ServeOptions {
        name: "demo-backend",
        max_connections,
        header_read_timeout: REQUEST_TIMEOUT,
        protocols: Protocols::Http1,
        shutdown_grace: SHUTDOWN_GRACE,
        ..ServeOptions::default()
    };
    let shutdown = async move { stopped(&mut stop).await };
    lienthong_runtime::serve(listener, None, per_connection, shutdown, options).await;
}

/// The HTTP answer to one request: the JSON of [`answer`].
fn respond(service: Service, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let (status, body) = answer(service, req.method().as_str(), target);
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
    if status == 405 {
        h.insert(header::ALLOW, HeaderValue::from_static("GET"));
    }
    resp
}

/// One of the three backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Service {
    Population,
    Business,
    CivilStatus,
}

/// A service's one kind of record: where it lives and how it's looked up.
struct Resource {
    segment: &'static str,
    key_name: &'static str,
    valid: fn(&str) -> bool,
    find: fn(&str) -> Option<Value>,
    invalid_code: &'static str,
    invalid_rule: &'static str,
    not_found: &'static str,
    agency: &'static str,
    system: &'static str,
}

impl Service {
    fn resource(self) -> Resource {
        match self {
            Service::Population => Resource {
                segment: "cong-dan",
                key_name: "so_dinh_danh",
                valid: |k| is_digits(k, 12),
                find: |k| CITIZENS.iter().find(|c| c.so_dinh_danh == k).map(Citizen::to_json),
                invalid_code: "so_dinh_danh_khong_hop_le",
                invalid_rule: "Số định danh cá nhân phải gồm đúng 12 chữ số",
                not_found: "Không tìm thấy công dân có số định danh",
                agency: "Bộ Công an",
                system: "Cơ sở dữ liệu quốc gia về dân cư",
            },
            Service::Business => Resource {
                segment: "doanh-nghiep",
                key_name: "ma_so_thue",
                valid: |k| is_digits(k, 10),
                find: |k| BUSINESSES.iter().find(|b| b.ma_so_thue == k).map(Business::to_json),
                invalid_code: "ma_so_thue_khong_hop_le",
                invalid_rule: "Mã số thuế doanh nghiệp phải gồm đúng 10 chữ số",
                not_found: "Không tìm thấy doanh nghiệp có mã số thuế",
                agency: "Bộ Tài chính",
                system: "Cổng thông tin quốc gia về đăng ký doanh nghiệp",
            },
            Service::CivilStatus => Resource {
                segment: "khai-sinh",
                key_name: "so",
                valid: is_birth_record_number,
                find: |k| BIRTHS.iter().find(|b| b.so == k).map(Birth::to_json),
                invalid_code: "so_khai_sinh_khong_hop_le",
                invalid_rule: "Số đăng ký khai sinh phải có dạng KS-<năm>-<6 chữ số>",
                not_found: "Không tìm thấy bản ghi khai sinh số",
                agency: "Sở Tư pháp tỉnh Nghệ An",
                system: "Cơ sở dữ liệu hộ tịch điện tử",
            },
        }
    }
}

/// The status and JSON body for a request.
fn answer(service: Service, method: &str, target: &str) -> (u16, Value) {
    if method != "GET" {
        let text = format!("Phương thức {method} không được hỗ trợ; dịch vụ chỉ nhận GET.");
        return (405, error("phuong_thuc_khong_duoc_ho_tro", &text));
    }
    let path = path_of(target);
    let r = service.resource();
    if path == "/" {
        let route = format!("/{}/{{{}}}", r.segment, r.key_name);
        return (200, json!({ "co_quan": r.agency, "he_thong": r.system, "duong_dan": [route] }));
    }
    let key = path
        .strip_prefix('/')
        .and_then(|p| p.strip_prefix(r.segment))
        .and_then(|p| p.strip_prefix('/'))
        .filter(|k| !k.contains('/'));
    let Some(key) = key else {
        return (404, error("duong_dan_khong_ton_tai", &format!("Không có đường dẫn {path}.")));
    };
    if !(r.valid)(key) {
        return (400, error(r.invalid_code, &format!("{} (nhận được \"{key}\").", r.invalid_rule)));
    }
    match (r.find)(key) {
        Some(record) => (200, record),
        None => (404, error("khong_tim_thay", &format!("{} {key}.", r.not_found))),
    }
}

/// The path of a request target, without query or fragment; absolute-form targets (as sent to
/// proxies) are reduced to their path.
fn path_of(target: &str) -> &str {
    let path = match target.split_once("://") {
        Some((_, rest)) if !target.starts_with('/') => rest.find('/').map_or("/", |i| &rest[i..]),
        _ => target,
    };
    path.find(['?', '#']).map_or(path, |i| &path[..i])
}

fn error(code: &str, text: &str) -> Value {
    json!({ "ma_loi": code, "thong_bao": text })
}

fn is_digits(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_digit())
}

fn is_birth_record_number(s: &str) -> bool {
    let mut parts = s.split('-');
    parts.next() == Some("KS")
        && parts.next().is_some_and(|y| is_digits(y, 4))
        && parts.next().is_some_and(|n| is_digits(n, 6))
        && parts.next().is_none()
}

/// A citizen in the population database. The id follows the CCCD convention: province code
/// (3 digits), gender and century (0/1 man/woman born 1900–1999, 2/3 from 2000), the last two
/// digits of the birth year, then 6 digits.
struct Citizen {
    so_dinh_danh: &'static str,
    ho_ten: &'static str,
    ngay_sinh: &'static str,
    gioi_tinh: &'static str,
    que_quan: &'static str,
    noi_thuong_tru: &'static str,
}

impl Citizen {
    fn to_json(&self) -> Value {
        json!({
            "so_dinh_danh": self.so_dinh_danh,
            "ho_ten": self.ho_ten,
            "ngay_sinh": self.ngay_sinh,
            "gioi_tinh": self.gioi_tinh,
            "quoc_tich": "Việt Nam",
            "que_quan": self.que_quan,
            "noi_thuong_tru": self.noi_thuong_tru,
        })
    }
}

// Addresses use the two-level form (xã/phường, tỉnh/thành phố) in force since July 2025.
const CITIZENS: &[Citizen] = &[
    Citizen {
        so_dinh_danh: "001099012345",
        ho_ten: "Nguyễn Văn An",
        ngay_sinh: "1999-03-14",
        gioi_tinh: "Nam",
        que_quan: "Xã Thường Tín, Thành phố Hà Nội",
        noi_thuong_tru: "Số 12 phố Hàng Bạc, Phường Hoàn Kiếm, Thành phố Hà Nội",
    },
    Citizen {
        so_dinh_danh: "001185023456",
        ho_ten: "Trần Thị Bình",
        ngay_sinh: "1985-07-02",
        gioi_tinh: "Nữ",
        que_quan: "Xã Sóc Sơn, Thành phố Hà Nội",
        noi_thuong_tru: "Số 48 ngõ 105 phố Doãn Kế Thiện, Phường Cầu Giấy, Thành phố Hà Nội",
    },
    Citizen {
        so_dinh_danh: "079090134567",
        ho_ten: "Lê Hoàng Cường",
        ngay_sinh: "1990-11-21",
        gioi_tinh: "Nam",
        que_quan: "Xã Củ Chi, Thành phố Hồ Chí Minh",
        noi_thuong_tru: "Số 214 đường Nguyễn Trãi, Phường Bến Thành, Thành phố Hồ Chí Minh",
    },
    Citizen {
        so_dinh_danh: "048192245678",
        ho_ten: "Phạm Thị Dung",
        ngay_sinh: "1992-05-30",
        gioi_tinh: "Nữ",
        que_quan: "Xã Hòa Vang, Thành phố Đà Nẵng",
        noi_thuong_tru: "Số 31 đường Trần Phú, Phường Hải Châu, Thành phố Đà Nẵng",
    },
    Citizen {
        so_dinh_danh: "040088356789",
        ho_ten: "Hồ Văn Em",
        ngay_sinh: "1988-09-09",
        gioi_tinh: "Nam",
        que_quan: "Xã Nam Đàn, Tỉnh Nghệ An",
        noi_thuong_tru: "Xóm 3, Xã Nam Đàn, Tỉnh Nghệ An",
    },
    Citizen {
        so_dinh_danh: "040301467890",
        ho_ten: "Nguyễn Thị Hoa",
        ngay_sinh: "2001-12-05",
        gioi_tinh: "Nữ",
        que_quan: "Xã Diễn Châu, Tỉnh Nghệ An",
        noi_thuong_tru: "Số 17 đường Lê Lợi, Phường Thành Vinh, Tỉnh Nghệ An",
    },
    Citizen {
        so_dinh_danh: "040205578901",
        ho_ten: "Trần Minh Khang",
        ngay_sinh: "2005-04-18",
        gioi_tinh: "Nam",
        que_quan: "Xã Đô Lương, Tỉnh Nghệ An",
        noi_thuong_tru: "Khối 5, Phường Trường Vinh, Tỉnh Nghệ An",
    },
    Citizen {
        so_dinh_danh: "042176689012",
        ho_ten: "Võ Thị Lan",
        ngay_sinh: "1976-08-23",
        gioi_tinh: "Nữ",
        que_quan: "Xã Can Lộc, Tỉnh Hà Tĩnh",
        noi_thuong_tru: "Số 9 đường Phan Đình Phùng, Phường Thành Sen, Tỉnh Hà Tĩnh",
    },
    Citizen {
        so_dinh_danh: "038067790123",
        ho_ten: "Đặng Quốc Hùng",
        ngay_sinh: "1967-01-30",
        gioi_tinh: "Nam",
        que_quan: "Xã Hoằng Hóa, Tỉnh Thanh Hóa",
        noi_thuong_tru: "Số 66 đường Lê Lai, Phường Hạc Thành, Tỉnh Thanh Hóa",
    },
    Citizen {
        so_dinh_danh: "046195801234",
        ho_ten: "Hoàng Thị Mai",
        ngay_sinh: "1995-10-10",
        gioi_tinh: "Nữ",
        que_quan: "Phường Hương Trà, Thành phố Huế",
        noi_thuong_tru: "Số 5 đường Lê Lợi, Phường Thuận Hóa, Thành phố Huế",
    },
    Citizen {
        so_dinh_danh: "092083912340",
        ho_ten: "Bùi Văn Phúc",
        ngay_sinh: "1983-06-16",
        gioi_tinh: "Nam",
        que_quan: "Xã Phong Điền, Thành phố Cần Thơ",
        noi_thuong_tru: "Số 102 đường 30 Tháng 4, Phường Ninh Kiều, Thành phố Cần Thơ",
    },
    Citizen {
        so_dinh_danh: "031300023457",
        ho_ten: "Đỗ Ngọc Quỳnh",
        ngay_sinh: "2000-02-29",
        gioi_tinh: "Nữ",
        que_quan: "Xã An Lão, Thành phố Hải Phòng",
        noi_thuong_tru: "Số 27 đường Điện Biên Phủ, Phường Hồng Bàng, Thành phố Hải Phòng",
    },
];

/// An enterprise in the business register. Tax codes begin with the registering province's
/// tax-office code (01 Hà Nội, 29 Nghệ An, ...).
struct Business {
    ma_so_thue: &'static str,
    ten_doanh_nghiep: &'static str,
    ten_viet_tat: &'static str,
    loai_hinh: &'static str,
    dia_chi_tru_so: &'static str,
    nguoi_dai_dien: &'static str,
    ngay_cap: &'static str,
}

impl Business {
    fn to_json(&self) -> Value {
        json!({
            "ma_so_thue": self.ma_so_thue,
            "ten_doanh_nghiep": self.ten_doanh_nghiep,
            "ten_viet_tat": self.ten_viet_tat,
            "loai_hinh": self.loai_hinh,
            "dia_chi_tru_so": self.dia_chi_tru_so,
            "nguoi_dai_dien": self.nguoi_dai_dien,
            "ngay_cap": self.ngay_cap,
            "tinh_trang": "Đang hoạt động",
        })
    }
}

const TNHH_2TV: &str = "Công ty TNHH hai thành viên trở lên";
const TNHH_1TV: &str = "Công ty TNHH một thành viên";
const CO_PHAN: &str = "Công ty cổ phần";

const BUSINESSES: &[Business] = &[
    Business {
        ma_so_thue: "0108456729",
        ten_doanh_nghiep: "Công ty TNHH Thương mại Sen Vàng",
        ten_viet_tat: "SEN VANG TRADING CO., LTD",
        loai_hinh: TNHH_2TV,
        dia_chi_tru_so: "Số 25 phố Lý Thường Kiệt, Phường Cửa Nam, Thành phố Hà Nội",
        nguoi_dai_dien: "Trần Thị Bình",
        ngay_cap: "2018-04-17",
    },
    Business {
        ma_so_thue: "2900774218",
        ten_doanh_nghiep: "Công ty Cổ phần Nông sản Nghệ An",
        ten_viet_tat: "NGHE AN AGRI JSC",
        loai_hinh: CO_PHAN,
        dia_chi_tru_so: "Số 8 đường Lê Hồng Phong, Phường Thành Vinh, Tỉnh Nghệ An",
        nguoi_dai_dien: "Đặng Văn Lực",
        ngay_cap: "2009-06-15",
    },
    Business {
        ma_so_thue: "2901487350",
        ten_doanh_nghiep: "Công ty TNHH Phần mềm Lam Hồng",
        ten_viet_tat: "LAM HONG SOFT CO., LTD",
        loai_hinh: TNHH_1TV,
        dia_chi_tru_so: "Số 56 đường Nguyễn Du, Phường Trường Vinh, Tỉnh Nghệ An",
        nguoi_dai_dien: "Hồ Văn Em",
        ngay_cap: "2021-10-05",
    },
    Business {
        ma_so_thue: "0202174633",
        ten_doanh_nghiep: "Công ty Cổ phần Logistics Cảng Xanh",
        ten_viet_tat: "CANG XANH LOGISTICS JSC",
        loai_hinh: CO_PHAN,
        dia_chi_tru_so: "Số 120 đường Lạch Tray, Phường Gia Viên, Thành phố Hải Phòng",
        nguoi_dai_dien: "Đỗ Minh Tuấn",
        ngay_cap: "2016-03-22",
    },
    Business {
        ma_so_thue: "0315982409",
        ten_doanh_nghiep: "Công ty TNHH Cà phê Cao Nguyên Xanh",
        ten_viet_tat: "CAO NGUYEN XANH COFFEE CO., LTD",
        loai_hinh: TNHH_1TV,
        dia_chi_tru_so: "Số 45 đường Nguyễn Thị Minh Khai, Phường Bến Thành, Thành phố Hồ Chí Minh",
        nguoi_dai_dien: "Lê Hoàng Cường",
        ngay_cap: "2019-08-30",
    },
    Business {
        ma_so_thue: "0401963287",
        ten_doanh_nghiep: "Công ty Cổ phần Du lịch Sông Hàn Xanh",
        ten_viet_tat: "SONG HAN XANH TRAVEL JSC",
        loai_hinh: CO_PHAN,
        dia_chi_tru_so: "Số 86 đường Bạch Đằng, Phường Hải Châu, Thành phố Đà Nẵng",
        nguoi_dai_dien: "Phạm Thị Dung",
        ngay_cap: "2017-05-12",
    },
    Business {
        ma_so_thue: "3000529173",
        ten_doanh_nghiep: "Công ty TNHH Dệt may Hồng Lam",
        ten_viet_tat: "HONG LAM GARMENT CO., LTD",
        loai_hinh: TNHH_2TV,
        dia_chi_tru_so: "Số 15 đường Trần Phú, Phường Thành Sen, Tỉnh Hà Tĩnh",
        nguoi_dai_dien: "Võ Thị Lan",
        ngay_cap: "2012-11-08",
    },
    Business {
        ma_so_thue: "1800736457",
        ten_doanh_nghiep: "Công ty Cổ phần Thủy sản Phù Sa Tây Đô",
        ten_viet_tat: "PHU SA TAY DO SEAFOOD JSC",
        loai_hinh: CO_PHAN,
        dia_chi_tru_so: "Số 33 đường Hai Bà Trưng, Phường Ninh Kiều, Thành phố Cần Thơ",
        nguoi_dai_dien: "Bùi Văn Phúc",
        ngay_cap: "2011-02-24",
    },
];

/// A birth registration in Nghệ An's civil-status register.
struct Birth {
    so: &'static str,
    ho_ten: &'static str,
    ngay_sinh: &'static str,
    noi_sinh: &'static str,
    cha: &'static str,
    me: &'static str,
    noi_dang_ky: &'static str,
    ngay_dang_ky: &'static str,
}

impl Birth {
    fn to_json(&self) -> Value {
        json!({
            "so": self.so,
            "ho_ten": self.ho_ten,
            "ngay_sinh": self.ngay_sinh,
            "noi_sinh": self.noi_sinh,
            "cha": self.cha,
            "me": self.me,
            "noi_dang_ky": self.noi_dang_ky,
            "ngay_dang_ky": self.ngay_dang_ky,
        })
    }
}

const BIRTHS: &[Birth] = &[
    Birth {
        so: "KS-2023-000125",
        ho_ten: "Hồ Bảo Ngọc",
        ngay_sinh: "2023-02-11",
        noi_sinh: "Bệnh viện Sản Nhi Nghệ An",
        cha: "Hồ Văn Em",
        me: "Nguyễn Thị Thu",
        noi_dang_ky: "UBND xã Nam Đàn, tỉnh Nghệ An",
        ngay_dang_ky: "2023-02-20",
    },
    Birth {
        so: "KS-2023-000348",
        ho_ten: "Trần Gia Huy",
        ngay_sinh: "2023-06-03",
        noi_sinh: "Bệnh viện Hữu nghị Đa khoa Nghệ An",
        cha: "Trần Văn Long",
        me: "Lê Thị Hằng",
        noi_dang_ky: "UBND phường Thành Vinh, tỉnh Nghệ An",
        ngay_dang_ky: "2023-06-19",
    },
    Birth {
        so: "KS-2024-000052",
        ho_ten: "Nguyễn Khánh Linh",
        ngay_sinh: "2024-01-27",
        noi_sinh: "Trạm Y tế xã Diễn Châu, tỉnh Nghệ An",
        cha: "Nguyễn Văn Tùng",
        me: "Phan Thị Hà",
        noi_dang_ky: "UBND xã Diễn Châu, tỉnh Nghệ An",
        ngay_dang_ky: "2024-02-05",
    },
    Birth {
        so: "KS-2024-000417",
        ho_ten: "Phan Đức Thịnh",
        ngay_sinh: "2024-09-12",
        noi_sinh: "Bệnh viện Sản Nhi Nghệ An",
        cha: "Phan Văn Quang",
        me: "Hoàng Thị Yến",
        noi_dang_ky: "UBND xã Kim Liên, tỉnh Nghệ An",
        ngay_dang_ky: "2024-09-30",
    },
    Birth {
        so: "KS-2025-000231",
        ho_ten: "Lê Thảo Vy",
        ngay_sinh: "2025-07-20",
        noi_sinh: "Bệnh viện Sản Nhi Nghệ An",
        cha: "Lê Văn Sơn",
        me: "Đinh Thị Nga",
        noi_dang_ky: "UBND phường Trường Vinh, tỉnh Nghệ An",
        ngay_dang_ky: "2025-08-04",
    },
    Birth {
        so: "KS-2025-000389",
        ho_ten: "Nguyễn Hoàng Nam",
        ngay_sinh: "2025-10-02",
        noi_sinh: "Trung tâm Y tế Đô Lương, tỉnh Nghệ An",
        cha: "Nguyễn Văn Hải",
        me: "Trần Thị Thanh",
        noi_dang_ky: "UBND xã Đô Lương, tỉnh Nghệ An",
        ngay_dang_ky: "2025-10-14",
    },
];

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::TokioIo;
    use time::Month;
    use tokio::net::TcpStream;
    use tokio::task::JoinSet;

    use super::*;

    /// The longest any one step of a test may take.
    const STEP: Duration = Duration::from_secs(10);

    async fn within<T>(f: impl Future<Output = T>) -> T {
        timeout(STEP, f).await.expect("step finished in time")
    }

    #[derive(Debug)]
    struct Reply {
        status: u16,
        headers: http::HeaderMap,
        json: Value,
    }

    impl Reply {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers.get(name).and_then(|v| v.to_str().ok())
        }
    }

    /// One request on a fresh connection.
    async fn call(addr: SocketAddr, method: &str, target: &str) -> Reply {
        let exchange = async {
            let tcp = TcpStream::connect(addr).await.expect("connect");
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.expect("handshake");
            tokio::spawn(conn);
            let req = Request::builder()
                .method(method)
                .uri(target)
                .header(header::HOST, addr.to_string())
                .body(Empty::<Bytes>::new())
                .expect("request");
            let resp = sender.send_request(req).await.expect("answer");
            let (parts, body) = resp.into_parts();
            let bytes = body.collect().await.expect("body").to_bytes();
            let json = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).expect("JSON body")
            };
            Reply { status: parts.status.as_u16(), headers: parts.headers, json }
        };
        within(exchange).await
    }

    async fn get(addr: SocketAddr, target: &str) -> Reply {
        call(addr, "GET", target).await
    }

    async fn start() -> Backends {
        within(Backends::start([0, 0, 0])).await.expect("backends start")
    }

    #[tokio::test]
    async fn every_sample_id_is_found() {
        let b = start().await;
        let cases = [
            (b.population, "cong-dan", "so_dinh_danh", CITIZEN_IDS),
            (b.business, "doanh-nghiep", "ma_so_thue", TAX_CODES),
            (b.civil_status, "khai-sinh", "so", BIRTH_RECORDS),
        ];
        for (addr, segment, field, ids) in cases {
            assert!(!ids.is_empty());
            for id in ids {
                let r = get(addr, &format!("/{segment}/{id}")).await;
                assert_eq!(r.status, 200, "{segment}/{id}: {}", r.json);
                assert_eq!(r.json[field], *id);
                assert_eq!(r.header("content-type"), Some("application/json; charset=utf-8"));
            }
        }
        let citizen = get(b.population, "/cong-dan/040088356789").await.json;
        assert_eq!(citizen["ho_ten"], "Hồ Văn Em");
        assert_eq!(citizen["quoc_tich"], "Việt Nam");
        assert_eq!(citizen["que_quan"], "Xã Nam Đàn, Tỉnh Nghệ An");
        let company = get(b.business, &format!("/doanh-nghiep/{}", TAX_CODES[0])).await.json;
        assert_eq!(company["tinh_trang"], "Đang hoạt động");
        b.shutdown().await;
    }

    #[tokio::test]
    async fn unknown_and_malformed_ids_and_paths() {
        let b = start().await;
        let cases = [
            (b.population, "/cong-dan/001099099999", 404, "khong_tim_thay"),
            (b.population, "/cong-dan/00109901234", 400, "so_dinh_danh_khong_hop_le"),
            (b.population, "/cong-dan/0010990123456", 400, "so_dinh_danh_khong_hop_le"),
            (b.population, "/cong-dan/00109901234a", 400, "so_dinh_danh_khong_hop_le"),
            (b.population, "/cong-dan/", 400, "so_dinh_danh_khong_hop_le"),
            (b.population, "/cong-dan", 404, "duong_dan_khong_ton_tai"),
            (b.population, "/cong-dan/001099012345/ho-khau", 404, "duong_dan_khong_ton_tai"),
            (b.population, "/doanh-nghiep/0108456729", 404, "duong_dan_khong_ton_tai"),
            (b.business, "/doanh-nghiep/0100000000", 404, "khong_tim_thay"),
            (b.business, "/doanh-nghiep/0108456729-001", 400, "ma_so_thue_khong_hop_le"),
            (b.civil_status, "/khai-sinh/KS-2019-999999", 404, "khong_tim_thay"),
            (b.civil_status, "/khai-sinh/125-2019", 400, "so_khai_sinh_khong_hop_le"),
            (b.civil_status, "/khai-sinh/KS-2023-000125-1", 400, "so_khai_sinh_khong_hop_le"),
        ];
        for (addr, target, status, code) in cases {
            let r = get(addr, target).await;
            assert_eq!((r.status, r.json["ma_loi"].as_str()), (status, Some(code)), "{target}: {}", r.json);
            assert!(r.json["thong_bao"].as_str().is_some_and(|t| !t.is_empty()));
            assert_eq!(r.header("content-type"), Some("application/json; charset=utf-8"));
        }
        let missing = get(b.population, "/cong-dan/001099099999").await;
        assert_eq!(missing.json["thong_bao"], "Không tìm thấy công dân có số định danh 001099099999.");

        let post = call(b.population, "POST", "/cong-dan/001099012345").await;
        assert_eq!((post.status, post.header("allow")), (405, Some("GET")));
        assert_eq!(post.json["ma_loi"], "phuong_thuc_khong_duoc_ho_tro");
        assert_eq!(call(b.business, "HEAD", "/").await.status, 405);

        // Query strings are ignored.
        assert_eq!(get(b.population, "/cong-dan/001099012345?fields=all").await.status, 200);
        let index = get(b.business, "/").await;
        assert_eq!((index.status, &index.json["co_quan"]), (200, &json!("Bộ Tài chính")));
        b.shutdown().await;
    }

    #[tokio::test]
    async fn serves_many_connections_at_once() {
        let b = start().await;
        let mut calls = JoinSet::new();
        for i in 0..96 {
            let (addr, target) = match i % 3 {
                0 => (b.population, format!("/cong-dan/{}", CITIZEN_IDS[i % CITIZEN_IDS.len()])),
                1 => (b.business, format!("/doanh-nghiep/{}", TAX_CODES[i % TAX_CODES.len()])),
                _ => (b.civil_status, format!("/khai-sinh/{}", BIRTH_RECORDS[i % BIRTH_RECORDS.len()])),
            };
            calls.spawn(async move { get(addr, &target).await.status });
        }
        let mut answered = 0;
        while let Some(status) = within(calls.join_next()).await {
            assert_eq!(status.expect("call task"), 200);
            answered += 1;
        }
        assert_eq!(answered, 96);
        b.shutdown().await;
    }

    #[tokio::test]
    async fn connections_beyond_the_cap_are_closed_at_once() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let b = within(Backends::start_capped([0, 0, 0], 1)).await.expect("backends start");
        let request = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n";
        let mut first = within(TcpStream::connect(b.population)).await.expect("connect");
        first.write_all(request).await.expect("write");
        let mut buf = [0u8; 64];
        let n = within(first.read(&mut buf)).await.expect("read");
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
        let mut second = within(TcpStream::connect(b.population)).await.expect("connect");
        let _ = second.write_all(request).await;
        let read = timeout(Duration::from_secs(1), second.read(&mut buf)).await.expect("closed at once");
        assert!(matches!(read, Ok(0) | Err(_)), "served beyond the cap: {read:?}");
        drop(first);
        b.shutdown().await;
    }

    #[tokio::test]
    async fn shutdown_closes_idle_connections_and_stops_accepting() {
        let b = start().await;
        let addr = b.population;
        // A kept-alive connection, idle after its answer.
        let tcp = within(TcpStream::connect(addr)).await.expect("connect");
        let (mut sender, conn) =
            within(hyper::client::conn::http1::handshake(TokioIo::new(tcp))).await.expect("handshake");
        let idle = tokio::spawn(conn);
        let req = Request::get("/").header(header::HOST, "x").body(Empty::<Bytes>::new()).expect("request");
        assert_eq!(within(sender.send_request(req)).await.expect("answer").status(), 200);
        // Bounded well below the grace period: an idle connection must not hold shutdown up.
        timeout(SHUTDOWN_GRACE / 2, b.shutdown()).await.expect("prompt shutdown");
        within(idle).await.expect("the server closed the idle connection").ok();
        assert!(within(TcpStream::connect(addr)).await.is_err(), "still accepting after shutdown");
    }

    #[tokio::test]
    async fn dropping_stops_them_too() {
        let b = start().await;
        let addr = b.business;
        assert_eq!(get(addr, "/").await.status, 200);
        drop(b);
        // Aborted tasks release the listener on their next poll, so this may take a moment.
        within(async {
            while TcpStream::connect(addr).await.is_ok() {
                tokio::task::yield_now().await;
            }
        })
        .await;
    }

    #[tokio::test]
    async fn a_port_in_use_is_an_error() {
        let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.expect("bind");
        let port = taken.local_addr().expect("address").port();
        let err = within(Backends::start([0, port, 0])).await.expect_err("port in use");
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }

    #[test]
    fn sample_ids_are_unique_and_well_formed() {
        for (ids, valid) in [
            (CITIZEN_IDS, (|k| is_digits(k, 12)) as fn(&str) -> bool),
            (TAX_CODES, |k| is_digits(k, 10)),
            (BIRTH_RECORDS, is_birth_record_number),
        ] {
            assert_eq!(ids.iter().collect::<HashSet<_>>().len(), ids.len());
            assert!(ids.iter().all(|id| valid(id)), "{ids:?}");
        }
        let data: [Vec<&str>; 3] = [
            CITIZENS.iter().map(|c| c.so_dinh_danh).collect(),
            BUSINESSES.iter().map(|b| b.ma_so_thue).collect(),
            BIRTHS.iter().map(|b| b.so).collect(),
        ];
        for ids in data {
            assert_eq!(ids.iter().collect::<HashSet<_>>().len(), ids.len(), "duplicate record {ids:?}");
        }
    }

    #[test]
    fn citizen_ids_agree_with_birth_and_gender() {
        for c in CITIZENS {
            let year: u32 = c.ngay_sinh[..4].parse().expect("year");
            let woman = match c.gioi_tinh {
                "Nam" => 0,
                "Nữ" => 1,
                other => panic!("gender {other}"),
            };
            let century = if year >= 2000 { 2 } else { 0 };
            let digit = u32::from(c.so_dinh_danh.as_bytes()[3] - b'0');
            assert_eq!(digit, century + woman, "{}", c.so_dinh_danh);
            assert_eq!(&c.so_dinh_danh[4..6], &c.ngay_sinh[2..4], "{}", c.so_dinh_danh);
        }
    }

    #[test]
    fn dates_are_real_and_in_order() {
        let date = |s: &str| {
            let mut parts = s.split('-').map(|p| p.parse::<i32>().unwrap_or_else(|e| panic!("{s}: {e}")));
            let (y, m, d) = (parts.next(), parts.next(), parts.next());
            let (Some(y), Some(m), Some(d), None) = (y, m, d, parts.next()) else {
                panic!("{s}: not YYYY-MM-DD")
            };
            assert_eq!(s.len(), 10, "{s}: not YYYY-MM-DD");
            let month = u8::try_from(m).ok().and_then(|m| Month::try_from(m).ok()).expect("month");
            time::Date::from_calendar_date(y, month, u8::try_from(d).expect("day"))
                .unwrap_or_else(|e| panic!("{s}: {e}"))
        };
        for c in CITIZENS {
            date(c.ngay_sinh);
        }
        for b in BUSINESSES {
            date(b.ngay_cap);
        }
        for b in BIRTHS {
            let (born, registered) = (date(b.ngay_sinh), date(b.ngay_dang_ky));
            assert!(born <= registered, "{}", b.so);
            assert_eq!(&b.so[3..7], &b.ngay_dang_ky[..4], "{}: number's year", b.so);
        }
    }
}
